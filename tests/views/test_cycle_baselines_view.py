"""The cycle section says which baseline the speedups are over when the plain loop was also timed with one
intra-op thread (issue 22: report both)."""

from gpudiag.views import sections


def test_the_cycle_section_shows_both_plain_loop_figures():
    serial = {"name": "serial", "status": "ok", "workers": 1, "cycles_per_s": 139.5, "spread_fraction": 0.05,
              "torch_threads": 2, "one_thread": {"torch_threads": 1, "cycles_per_s": 99.9, "spread_fraction": 0.02,
                                                 "vs_default": 0.716, "vs_default_ci95": [0.7, 0.73]}}
    threads = {"name": "threads", "status": "ok", "workers": 2, "cycles_per_s": 187.4, "torch_threads": 1}
    data = {"workload": {"device": "cpu", "cycles": 16}, "strategies": [serial, threads]}
    report = {"probes": {"cycle": {"status": "ok", "data": data, "findings": []}}}
    kv = dict(next(s for s in sections.probe_sections(report) if s["name"] == "cycle")["kv"])
    line = kv["Plain loop's intra-op threads"]
    assert "2 (torch's default here): 139.5 cycles/s" in line and "with 1 thread: 99.9 cycles/s (0.72x" in line
    assert "0.70-0.73x" in line and "threads and processes ran 1 per worker" in line
    del serial["one_thread"]
    kv = dict(next(s for s in sections.probe_sections(report) if s["name"] == "cycle")["kv"])
    assert "Plain loop's intra-op threads" not in kv
