"""`watch` and a DataLoader whose main thread loads its own batches (num_workers=0, issue 22): the loop's
loading share, the prediction of what DataLoader workers gain (share, samples, usable cores -> speedup,
interval, N), the verdict, the recommendation and its views; then the real loop of
examples/dataloader_loop.py under watch (skipped without torch or py-spy; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys

import pytest

import tests
from gpudiag.watch import analysis, pyspy
from gpudiag.watch import diagnose as dg
from gpudiag.watch import recommend as wr
from tests.watch.test_watch_units import _data

HAS_TORCH = importlib.util.find_spec("torch") is not None
SPY = pyspy.find_py_spy()


def _main_samples(states, t0=0.0, dt=0.1):
    """Dumps of a main thread whose DataLoader state is states[i] ('loading', 'waiting' or None)."""
    return [{"t": t0 + i * dt, "native": False,
             "threads": [{"id": 1, "tid": 1, "name": "MainThread", "state": pyspy.HOLDS, "active": True, "loader": st}]}
            for i, st in enumerate(states)]


def _loading(share, n, startup=0):
    """n samples of a loop loading in `share` of them (spread evenly), after `startup` samples of imports;
    the loop's first and last samples are in the loader."""
    k = max(2, round(share * n))
    at = {round(j * (n - 1) / (k - 1)) for j in range(k)}
    return [None] * startup + ["loading" if i in at else None for i in range(n)]


def _loader_data(share=0.83, n=100, cores=2, gpu=None, **kw):
    d = _data(inp=analysis.input_wait_section(_main_samples(_loading(share, n))), gpu=gpu, **kw)
    d["machine"] = {"logical_cores": cores, "usable_cores": cores}
    d["cpu"]["logical_cores"] = cores
    return d


# ------------------------------------------------------------------ the prediction

def test_two_cores_shared_by_the_main_thread_and_two_workers():
    p = wr.loader_prediction(0.83, 100, 2)
    assert p["workers"] == 2  # not more workers than usable cores
    assert p["upper_model"] == pytest.approx(2.0)  # every core busy: the whole step's CPU over 2 cores
    assert p["lower_model"] == pytest.approx((2 / 3) / (0.83 / 2))  # each of 3 threads gets 2/3 of a core
    assert p["speedup"] == pytest.approx((p["upper_model"] + p["lower_model"]) / 2)
    lo, hi = p["speedup_ci95"]
    assert lo < p["lower_model"] < p["speedup"] < hi == pytest.approx(2.0)
    assert p["share_ci95"][0] < 0.83 < p["share_ci95"][1]
    assert [r["workers"] for r in p["by_workers"]] == [1, 2]


def test_free_cores_give_amdahls_limit_with_enough_workers():
    p = wr.loader_prediction(0.83, 400, 16)
    assert p["workers"] == 5  # 0.83 / 5 < 0.17: five workers keep up with the main thread's own part
    assert p["upper_model"] == p["lower_model"] == pytest.approx(1 / 0.17)  # no core is shared
    assert p["speedup_ci95"][0] < p["speedup"] < p["speedup_ci95"][1]


def test_a_small_share_needs_one_worker_and_gains_little():
    p = wr.loader_prediction(0.3, 200, 4)
    assert p["workers"] == 1 and p["speedup"] == pytest.approx(1 / 0.7)


def test_one_core_gains_nothing():
    p = wr.loader_prediction(0.83, 100, 1)
    assert p["workers"] == 1 and p["speedup"] < dg.LOADER_MIN_GAIN and p["speedup_ci95"][1] <= 1.0 + 1e-9


def test_other_programs_widen_the_interval_downwards_and_claim_nothing_more():
    idle = wr.loader_prediction(0.83, 200, 2)
    for others in (0.3, 1.0, 1.3, 1.9):
        busy = wr.loader_prediction(0.83, 200, 2, others=others)
        assert busy["speedup"] == idle["speedup"] and busy["workers"] == idle["workers"]
        assert busy["speedup_ci95"][1] == idle["speedup_ci95"][1] and busy["speedup_ci95"][0] <= idle["speedup_ci95"][0]
    # other programs keeping 0.5 of 2 cores leave the job 1.5: at most 1.5x; keeping 1.2, only the loop's one
    assert wr.loader_prediction(0.83, 200, 2, others=0.5)["by_workers"][1]["beside_others_model"] == pytest.approx(1.5)
    assert wr.loader_prediction(0.83, 200, 2, others=1.2)["speedup_ci95"][0] == pytest.approx(1.0)


def test_more_samples_narrow_the_interval():
    wide, narrow = wr.loader_prediction(0.6, 30, 4), wr.loader_prediction(0.6, 3000, 4)
    assert narrow["speedup_ci95"][1] - narrow["speedup_ci95"][0] < wide["speedup_ci95"][1] - wide["speedup_ci95"][0]


@pytest.mark.parametrize("share,n,cores", list(itertools.product((0.2, 0.5, 0.83, 0.97, 1.0), (20, 100, 1000),
                                                                  (1, 2, 3, 8, None))))
def test_the_interval_always_holds_the_prediction(share, n, cores):
    p = wr.loader_prediction(share, n, cores)
    lo, hi = p["speedup_ci95"]
    assert lo <= p["lower_model"] <= p["speedup"] <= p["upper_model"] <= hi
    assert 1 <= p["workers"] <= (cores or 64)
    if cores:
        assert hi <= cores + 1e-9  # never more than the usable cores


# ------------------------------------------------------------------ the section, the verdict, the advice

def test_the_loading_share_counts_the_loop_not_the_start_up():
    sec = analysis.input_wait_section(_main_samples(_loading(0.8, 100, startup=100)))
    assert sec["main_thread_loading_fraction"] == pytest.approx(0.4)  # the whole run, imports included
    assert sec["loop_samples"] == 100 and sec["loading_share"] == pytest.approx(0.8)
    assert sec["loading_share_ci95"][0] < 0.8 < sec["loading_share_ci95"][1]
    assert sec["loop_s"] == pytest.approx(9.9)


def test_a_high_loading_share_recommends_workers_with_a_predicted_gain():
    data = _loader_data(0.83, 100, cores=2)
    vs = dg.verdicts(data)
    v = next(v for v in vs if v["cause"] == "input_starvation")
    assert v["verdict"] == "supported" and not v["noisy"]
    assert "loaded its own DataLoader batches (num_workers=0) in 83 % of 100 samples" in v["summary"]
    rec = wr.recommend(data, vs)
    assert rec["strategy"] == "loader_workers" and rec["workers"] == 2 and rec["confidence"] == "clear"
    assert rec["speedup"] == pytest.approx(wr.loader_prediction(0.83, 100, 2)["speedup"])
    assert rec["speedup_ci95"][0] < rec["speedup"] <= rec["speedup_ci95"][1] and rec["samples"] == 100
    assert rec["settings"] == {"num_workers": 2, "persistent_workers": True}  # no GPU: no pin_memory
    assert rec["prediction"]["cores"] == 2 and rec["prediction"]["share"] == pytest.approx(0.83)
    assert "set DataLoader(num_workers=2, persistent_workers=True)" in rec["headline"]
    assert f"predicted {rec['speedup']:.2f}x the steps per second (95 % interval" in rec["headline"]
    f = next(f for f in wr.findings(data, vs) if f["code"] == "WATCH_INPUT_IN_MAIN_THREAD")
    assert "DataLoader(num_workers=2, persistent_workers=True)" in f["fix"]
    ev = {e["source"]: e["value"] for e in rec["evidence"]}
    assert ev["probes.watch.data.input_wait.loading_share"] == pytest.approx(0.83)


def test_a_busy_machine_is_said_in_the_advice():
    data = _loader_data(0.83, 100, cores=2)
    data["cpu"]["background_cpu_cores"] = 1.0
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["strategy"] == "loader_workers" and rec["prediction"]["other_cores"] == 1.0
    assert "the low end counts the 1.0 cores other programs kept busy during the watch" in rec["headline"]
    assert rec["speedup_ci95"][0] < wr.loader_prediction(0.83, 100, 2)["speedup_ci95"][0]
    # 1.0 of 2 cores kept by others leave the loop its one: the gain may be nothing, so no surer than that
    assert rec["confidence"] == "too_noisy" and "watch again on a quieter machine" in rec["confidence_reason"]
    data["cpu"]["background_cpu_cores"] = 0.5  # 1.5 cores left: the gain is still worth it at the low end
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["confidence"] == "clear" and "the low end counts the 0.5 cores" in rec["headline"]


def test_pin_memory_only_when_the_job_uses_a_gpu():
    gpu = {"status": "ok", "devices": [{"index": 0, "job_processes": [{"pid": 1}], "busy_fraction": 0.95,
                                        "idle_fraction": 0.02}]}
    rec = wr.recommend(*(lambda d: (d, dg.verdicts(d)))(_loader_data(0.83, 100, cores=8, gpu=gpu)))
    assert rec["settings"] == {"num_workers": 5, "persistent_workers": True, "pin_memory": True}
    idle = {"status": "ok", "devices": [{"index": 0, "job_processes": [], "busy_fraction": 0.0, "idle_fraction": 1.0}]}
    rec = wr.recommend(*(lambda d: (d, dg.verdicts(d)))(_loader_data(0.83, 100, cores=8, gpu=idle)))
    assert "pin_memory" not in rec["settings"]


def test_a_low_loading_share_recommends_no_workers():
    data = _loader_data(0.1, 100, cores=2)
    vs = dg.verdicts(data)
    v = next(v for v in vs if v["cause"] == "input_starvation")
    assert v["verdict"] == "refuted" and "loaded batches itself in 10 %" in v["summary"]
    rec = wr.recommend(data, vs)
    assert rec["strategy"] == "unchanged" and "speedup" not in rec and "settings" not in rec
    assert "WATCH_INPUT_IN_MAIN_THREAD" not in [f["code"] for f in wr.findings(data, vs)]


def test_too_few_samples_of_the_loop_judge_nothing():
    data = _loader_data(0.9, 10, cores=2)
    v = dg.verdict_input(data)
    assert v["verdict"] == "not_measured" and "only 10 samples of the loop" in v["reason"]


def test_one_usable_core_says_workers_would_gain_little():
    data = _loader_data(0.83, 100, cores=1)
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["strategy"] == "unchanged" and "DataLoader workers would gain little here" in rec["headline"]


def test_workers_that_cannot_keep_up_keep_their_advice():
    inp = {"status": "ok", "loader_seen": True, "fraction": 0.5, "ci95": [0.4, 0.6], "samples": 60,
           "main_thread_loading_fraction": 0.0}
    data = _data(inp=inp)
    vs = dg.verdicts(data)
    rec = wr.recommend(data, vs)
    assert rec["strategy"] == "loader_workers" and rec["workers"] is None and "speedup" not in rec
    assert "give the DataLoader more workers than the 0 seen" in rec["headline"]
    assert "WATCH_INPUT_STARVED" in [f["code"] for f in wr.findings(data, vs)]


def test_the_lead_of_every_view_shows_the_gain_and_the_settings():
    from gpudiag.views import render, watch_view

    data = _loader_data(0.83, 100, cores=2)
    rec = wr.recommend(data, dg.verdicts(data))
    rows = dict(watch_view.lead(data, rec)["figures"])
    assert rows["Settings to change"] == "DataLoader(num_workers=2, persistent_workers=True)"
    assert rows["Predicted gain"].startswith(f"{rec['speedup']:.2f}x the steps per second (95 % interval ")
    assert "83 % of 100 samples of the loop" in rows["Predicted gain"] and "on 2 usable cores" in rows["Predicted gain"]
    choice = watch_view.choice_table(rec)
    assert "predicted speedup" in [c["label"] for c in choice["cols"]] and f"{rec['speedup']:.2f}x" in choice["rows"][0]
    rep = {"schema_version": 1, "mode": "watch", "probes": {"watch": {"status": "ok", "reason": "", "duration_s": 1.0,
                                                                        "data": data, "findings": []}},
           "recommendation": rec, "host": {}}
    md = render.render_markdown(rep)
    assert "| Predicted gain |" in md and "DataLoader(num_workers=2, persistent_workers=True)" in md
    assert "Predicted gain" in render.render_html(rep)
    assert "set DataLoader(num_workers=2, persistent_workers=True)" in watch_view.render_terminal(rep)


# ------------------------------------------------------------------ the real loop

@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install '.[torch]')")
@pytest.mark.skipif(SPY is None, reason="py-spy is not installed (pip install 'gpudiag[watch]')")
def test_the_example_loop_under_watch_gets_dataloader_workers(tmp_path):
    from gpudiag.watch.session import WatchSession

    loop = os.path.join(tests.ROOT, "examples", "dataloader_loop.py")
    # Four seconds of the loop at 0.1 s: about 40 samples (20 are needed), without native stacks (the
    # loader's frames are Python's), so that py-spy costs a loaded machine little.
    with WatchSession(command=[sys.executable, loop, "--steps", "100000", "--seconds", "4", "--warmup", "5"],
                      interval_s=0.1, native_every=0, py_spy=SPY, nvml=False) as w:
        w.start()
        rep = w.watch()
        code = w.finish()
    assert code == 0
    inp = rep["probes"]["watch"]["data"]["input_wait"]
    assert inp["loader_seen"] and inp["loop_samples"] >= dg.MIN_LOADER_SAMPLES
    assert inp["loading_share"] >= 0.4  # about 0.8 when measured by hand; a loaded machine stretches both parts
    rec = rep["recommendation"]
    assert rec["strategy"] == "loader_workers" and rec["workers"] >= 1 and rec["speedup"] > 1
    assert rec["settings"]["num_workers"] == rec["workers"] and rec["settings"]["persistent_workers"] is True
