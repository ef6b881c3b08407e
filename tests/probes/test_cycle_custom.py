"""`--cycle MODULE:FACTORY`: the user's own step, end to end through the CLI, and its failures in words."""

import json
import textwrap

import pytest
from click.testing import CliRunner

import gpudiag.probes as probes_registry
import tests
from gpudiag import runner
from gpudiag.cli import main
from gpudiag.probes.base import ProbeContext
from gpudiag.probes.cycle import probe as cycle_probe
from gpudiag.probes.cycle import workload

REPO = tests.ROOT


@pytest.fixture
def only_cycle(monkeypatch):
    """The CLI runs just the cycle probe (the others have tests of their own)."""
    monkeypatch.setattr(probes_registry, "_MODULES", ("cycle",))


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder with user modules in it, as the current directory (gpudiag imports from there)."""
    (tmp_path / "good_loop.py").write_text(textwrap.dedent("""
        class Loop:
            def __init__(self):
                self.n, self.closed = 0, False
            def step(self):
                self.n += sum(range(200))
            def close(self):
                self.closed = True

        def make():            # no device argument: called as make()
            return Loop()

        def boom(device):
            raise ValueError("no dataset at /data")

        def bad_step(device):
            def step():
                raise KeyError("metric")
            return step

        def not_a_step(device):
            return 42

        VALUE = 3
    """))
    (tmp_path / "broken_import.py").write_text("import definitely_not_a_module_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------- loading, in this process

@pytest.mark.parametrize("ref", ["nocolon", "a:b:c", ":make", "mod:", "my-mod:make", "mod:make()"])
def test_parse_ref_rejects_malformed_values(ref):
    with pytest.raises(workload.CustomLoopError, match="MODULE:FACTORY"):
        workload.parse_ref(ref)


def test_parse_ref_accepts_dotted_modules():
    assert workload.parse_ref("examples.my_loop:make_step") == ("examples.my_loop", "make_step")


def test_object_protocol_step_and_close(user_folder):
    w = workload.CustomWorkload("good_loop:make", "cpu", str(user_folder))
    loop = w._step.__self__  # the object make() returned: its step() is what the workload runs
    w.run_cycles(3)
    assert loop.n == 3 * sum(range(200)) and not loop.closed
    w.close()
    assert loop.closed


@pytest.mark.parametrize("ref, words", [
    ("missing_mod_xyz:make", "cannot import module 'missing_mod_xyz'"),
    ("broken_import:make", "cannot import module 'broken_import'"),
    ("good_loop:nope", "has no attribute 'nope'"),
    ("good_loop:VALUE", "is not callable"),
    ("good_loop:boom", "the factory raised ValueError: no dataset at /data"),
    ("good_loop:not_a_step", "return a step() callable or an object with .step()"),
])
def test_bad_custom_loops_say_what_is_wrong(user_folder, ref, words):
    with pytest.raises(workload.CustomLoopError) as info:
        workload.CustomWorkload(ref, "cpu", str(user_folder)).run_cycles(1)
    assert words in str(info.value) and ref in str(info.value)


def test_a_step_that_raises_is_named(user_folder):
    w = workload.CustomWorkload("good_loop:bad_step", "cpu", str(user_folder))
    with pytest.raises(workload.CustomLoopError, match=r"step\(\) raised KeyError"):
        w.run_cycles(1)


# ---------------------------------------------------------------- through the runner and the CLI

@pytest.mark.torch
def test_factory_raising_fails_the_probe_with_a_clear_reason(user_folder):
    res = runner.run_probe(cycle_probe.PROBE, ProbeContext(timeout_s=60, options={"cycle": "good_loop:boom"}))
    assert res["status"] == "failed"
    assert res["reason"].startswith("CustomLoopError: --cycle good_loop:boom: the factory raised ValueError")
    assert "Traceback" not in res["reason"]


@pytest.mark.torch
def test_cli_cycle_runs_the_readme_example_end_to_end(only_cycle, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # `examples.my_loop` is imported from the current folder
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["report", "--cycle", "examples.my_loop:make_step", "--json", str(out),
                                    "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    cyc = json.loads(out.read_text())["probes"]["cycle"]
    assert cyc["status"] == "ok", cyc["reason"]
    data = cyc["data"]
    assert data["custom"] == "examples.my_loop:make_step"
    assert data["workload"]["model"] == "custom step examples.my_loop:make_step"
    rows = {r["name"]: r for r in data["strategies"]}
    for name in ("serial", "threads", "processes"):
        assert rows[name]["status"] == "ok" and rows[name]["cycles_per_s"] > 0, rows[name]
    assert rows["cuda_graph"]["status"] == "skipped"  # CPU here; on a GPU its .item() makes capture fail
    for name in ("batched", "deferred_sync", "streams"):
        assert rows[name]["status"] == "skipped" and rows[name]["reason"]


@pytest.mark.parametrize("value", ["examples.my_loop", "a:b:c", "not a module:make"])
def test_cli_rejects_a_malformed_cycle_value_in_one_line(only_cycle, value):
    res = CliRunner().invoke(main, ["report", "--cycle", value])
    assert res.exit_code == 2
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "MODULE:FACTORY" in lines[0] and "Traceback" not in res.output


@pytest.mark.torch
@pytest.mark.parametrize("ref, words", [
    ("missing_mod_xyz:make", "cannot import module 'missing_mod_xyz'"),
    ("broken_import:make", "cannot import module 'broken_import'"),
    ("good_loop:nothing_here", "module 'good_loop' has no attribute 'nothing_here'"),
    ("good_loop:VALUE", "'VALUE' is not callable"),
])
def test_cli_checks_the_cycle_factory_before_any_probe_runs(user_folder, ref, words):
    """Importable and callable, checked up front: exit 2, one line, no internal file name, nothing written."""
    res = CliRunner().invoke(main, ["report", "--only", "system", "--only", "cycle", "--cycle", ref,
                                    "--json", "r.json", "-o", "r.html"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"gpudiag: error: --cycle {ref}: ") and words in lines[0]
    assert ".py:" not in lines[0] and "Traceback" not in res.output
    assert not (user_folder / "r.json").exists() and not (user_folder / "r.html").exists()


@pytest.mark.torch
def test_run_report_raises_value_error_for_a_bad_factory(user_folder):
    import gpudiag

    with pytest.raises(ValueError, match="no attribute 'nope'"):
        gpudiag.run_report(only="cycle", cycle="good_loop:nope")


def test_the_factory_check_never_calls_the_factory(user_folder):
    """good_loop:boom raises when called; the check only imports and looks it up."""
    from gpudiag import api

    api._check_cycle_factory("good_loop:boom")  # no ValueError


def test_cli_cycle_with_the_cycle_probe_skipped_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(probes_registry, "_MODULES", ("cycle",))
    res = CliRunner().invoke(main, ["report", "--cycle", "a:b", "--only", "cycle", "--skip", "cycle"])
    assert res.exit_code == 2
