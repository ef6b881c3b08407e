"""Memory fit reads every worker count a row's sweep measured, and names the binding limit (host RAM,
cgroup, WSL cap or GPU memory) with that limit's own figures."""

from gpudiag.diagnose import memory_fit
from gpudiag.diagnose.recommend import recommend

GiB, MiB = 2**30, 2**20


def report(gil_mem, strategies=None, system=None):
    probes = {"gil": {"status": "ok", "data": {"memory": gil_mem}}}
    if system is not None:
        probes["system"] = {"status": "ok", "data": system}
    if strategies is not None:
        probes["cycle"] = {"status": "ok", "data": {"workload": {"device": "cuda:0", "logical_cores": 8},
                                                    "strategies": strategies,
                                                    "load": {"other_busy_cores": 0.0, "usable_cores": 8}}}
    return {"probes": probes}


def processes(headline, sweep):
    rows = [{"name": "serial", "status": "ok", "workers": 1, "cycles_per_s": 30.0, "speedup_vs_serial": 1.0}]
    best = next(e for e in sweep if e[0] == headline)
    rows.append({"name": "processes", "status": "ok", "workers": headline, "cycles_per_s": best[1],
                 "speedup_vs_serial": round(best[1] / 30.0, 3), "speedup_ci95": best[2],
                 "sweep": [{"workers": w, "cycles_per_s": c, "speedup_ci95": ci, "samples": 7, "status": "ok"}
                           for w, c, ci in sweep]})
    return rows


# The Kali laptop of the story: 1.9 GiB per CUDA worker, 6 GiB budget, GTX 1650 with 3.3 GiB free.
KALI = {"per_worker_host_bytes": int(1.9 * GiB), "budget_host_bytes": 6 * GiB,
        "per_worker_device_bytes": 296 * MiB, "budget_device_bytes": int(3.3 * GiB), "fits": {"processes": 3}}


def test_a_measured_count_that_fits_is_used_instead_of_the_headline():
    rows = processes(4, [(2, 45.0, [1.42, 1.58]), (4, 52.8, [1.66, 1.86])])
    r = recommend(report(KALI, rows))
    assert (r["strategy"], r["workers"], r["cycles_per_s"]) == ("processes", 2, 45.0)
    assert r["speedup_ci95"] == [1.42, 1.58]
    assert not any("would fit, but" in x["why_not"] for x in r["runners_up"])


def test_would_fit_but_not_measured_only_when_it_really_was_not():
    rows = processes(4, [(4, 52.8, [1.66, 1.86]), (8, 50.0, [1.5, 1.8])])
    r = recommend(report(KALI, rows))
    procs = next(x for x in r["runners_up"] if x["strategy"] == "processes")
    assert "3 workers would fit, but only 4, 8 were measured" in procs["why_not"]


def test_host_ram_binds_and_its_figures_are_quoted():
    text = memory_fit.limit_text(memory_fit.memory_limits(report(KALI)), 4)
    assert text == "4 workers x 1.9 GiB of host memory = 7.6 GiB against 6 GiB of host memory; 3 fit"


def test_gpu_memory_binds_and_the_text_quotes_gpu_figures_not_ram_that_fits():
    mem = dict(KALI, budget_host_bytes=64 * GiB, budget_device_bytes=900 * MiB, fits={"processes": 3})
    limits = memory_fit.memory_limits(report(mem))
    assert limits["values"]["binding_limit"] == "device"
    text = memory_fit.limit_text(limits, 4)
    assert "296 MiB of GPU memory per CUDA context" in text and "900 MiB of free GPU memory" in text
    assert "64" not in text and "1.9 GiB" not in text


def test_the_cgroup_and_the_wsl_cap_are_named_as_the_limit():
    cgroup = {"memory": {"budget_source": "cgroup_limit_minus_usage"}, "os": {"wsl": None}}
    text = memory_fit.limit_text(memory_fit.memory_limits(report(KALI, system=cgroup)), 4)
    assert "of the cgroup (container) memory limit" in text
    wsl = {"memory": {"budget_source": "ram_available"}, "os": {"wsl": 2}}
    text = memory_fit.limit_text(memory_fit.memory_limits(report(KALI, system=wsl)), 4)
    assert "of the WSL2 VM's memory cap (.wslconfig)" in text
    ram = {"memory": {"budget_source": "ram_available"}, "os": {"wsl": None}}
    assert "of available host RAM" in memory_fit.limit_text(memory_fit.memory_limits(report(KALI, system=ram)), 4)


def test_worker_memory_verdict_names_the_binding_limit():
    mem = dict(KALI, budget_host_bytes=64 * GiB, budget_device_bytes=900 * MiB, fits={"processes": 3})
    rows = processes(4, [(4, 52.8, [1.66, 1.86])])
    v = next(v for v in recommend(report(mem, rows))["verdicts"] if v["cause"] == "worker_memory")
    assert v["verdict"] == "supported" and "free GPU memory is the limit" in v["summary"]
    assert "GPU memory per CUDA context" in v["summary"]
