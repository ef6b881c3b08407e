import time

import psutil
import pytest

from gpudiag import runner
from gpudiag.capabilities import Capability
from tests import fixture_probes

CAPS = {"torch": Capability(True, ""), "imaginary": Capability(False, "imaginary hardware is missing: buy some")}


def test_ok_probe_runs_isolated_and_returns_data_and_findings():
    res = runner.run_probe(fixture_probes.OK, runner.ProbeContext(mode="full", timeout_s=30), CAPS)
    assert res["status"] == "ok", res
    assert res["data"]["answer"] == 42 and res["data"]["mode"] == "full"
    assert res["findings"][0]["code"] == "TEST_FINDING"
    assert res["duration_s"] > 0


def test_hanging_probe_times_out_and_the_rest_still_run():
    t0 = time.monotonic()
    out = runner.run_probes([fixture_probes.HANG, fixture_probes.OK], caps=CAPS)
    assert time.monotonic() - t0 < 20
    hang = out["results"]["hang_probe"]
    assert hang["status"] == "failed"
    assert hang["reason"] == "timed out after 1.5 s"
    assert out["results"]["ok_probe"]["status"] == "ok"
    assert out["results"]["ok_probe"]["data"]["seen"] == []  # failed probes pass no data on


def test_segfaulting_probe_is_failed_with_the_signal_named():
    res = runner.run_probe(fixture_probes.CRASH, runner.ProbeContext(timeout_s=30), CAPS)
    assert res["status"] == "failed"
    assert "signal 11" in res["reason"] and "SIGSEGV" in res["reason"]


def test_sigkilled_probe_is_blamed_on_the_oom_killer():
    res = runner.run_probe(fixture_probes.SELF_KILL, runner.ProbeContext(timeout_s=30), CAPS)
    assert res["status"] == "failed"
    assert res["reason"] == "killed by signal 9 (SIGKILL) - likely the out-of-memory killer"


def test_exception_is_failed_with_type_message_and_place():
    res = runner.run_probe(fixture_probes.RAISE, runner.ProbeContext(timeout_s=30), CAPS)
    assert res["status"] == "failed"
    assert res["reason"].startswith("RuntimeError: boom at fixture_probes.py:")


def test_probe_skip_and_missing_capability_are_skipped_with_reason():
    res = runner.run_probe(fixture_probes.SKIP, runner.ProbeContext(timeout_s=30), CAPS)
    assert (res["status"], res["reason"]) == ("skipped", "no frobnicator here: install one")
    res = runner.run_probe(fixture_probes.NEEDS_MISSING, runner.ProbeContext(timeout_s=30), CAPS)
    assert (res["status"], res["reason"]) == ("skipped", "imaginary hardware is missing: buy some")


def test_bad_return_value_is_failed():
    res = runner.run_probe(fixture_probes.BAD_RETURN, runner.ProbeContext(timeout_s=30), CAPS)
    assert res["status"] == "failed" and "expected ProbeOutput" in res["reason"]


def test_timeout_kills_grandchildren_too(tmp_path):
    pid_file = tmp_path / "pid"
    out = runner.run_probes([fixture_probes.HANG_CHILD], options={"pid_file": str(pid_file)}, caps=CAPS)
    assert out["results"]["hang_child_probe"]["reason"] == "timed out after 2 s"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert not alive


def test_later_probes_see_earlier_data():
    second = fixture_probes.make("second", fixture_probes._ok)
    out = runner.run_probes([fixture_probes.OK_INLINE, second], caps=CAPS)
    assert out["results"]["second"]["data"]["seen"] == ["ok_inline"]


def test_ctrl_c_marks_the_rest_not_run(monkeypatch):
    calls = []
    real = runner.run_probe

    def fake(probe, ctx, caps=None, server=None):
        calls.append(probe.name)
        if probe.name == "second":
            raise KeyboardInterrupt
        return real(probe, ctx, caps, server)

    monkeypatch.setattr(runner, "run_probe", fake)
    probes = [fixture_probes.OK_INLINE, fixture_probes.make("second", fixture_probes._ok), fixture_probes.make("third", fixture_probes._ok)]
    out = runner.run_probes(probes, caps=CAPS)
    assert out["interrupted"] is True
    assert out["results"]["ok_inline"]["status"] == "ok"
    assert out["results"]["second"]["status"] == "skipped"
    assert out["results"]["second"]["reason"].startswith("interrupted by Ctrl-C after ")
    assert "while running" in out["results"]["second"]["reason"]
    assert out["results"]["third"]["status"] == "skipped"
    assert out["results"]["third"]["reason"] == "not run: interrupted by Ctrl-C"
    assert out["signal"] == 2
    assert calls == ["ok_inline", "second"]


def test_selected_filters_and_rejects_unknown_names():
    probes = [fixture_probes.OK, fixture_probes.SKIP, fixture_probes.RAISE]
    assert [p.name for p in runner.selected(probes, only=["skip_probe"])] == ["skip_probe"]
    assert [p.name for p in runner.selected(probes, skip=["skip_probe"])] == ["ok_probe", "raise_probe"]
    with pytest.raises(ValueError, match="unknown probe 'nope'"):
        runner.selected(probes, only=["nope"])


@pytest.mark.parametrize("code,words", [
    (-9, "killed by signal 9 (SIGKILL) - likely the out-of-memory killer"),
    (-11, "crashed with signal 11 (SIGSEGV)"),
    (-15, "killed by signal 15 (SIGTERM)"),
    (137, "exited with code 137 (SIGKILL) - likely the out-of-memory killer"),
    (3, "exited with code 3 without a result"),
])
def test_exit_descriptions(code, words):
    assert runner._describe_exit(code) == words
