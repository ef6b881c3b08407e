"""One watch from start to report: launch or attach, sample until the job ends, analyse, build the report.

    with WatchSession(command=["python", "train.py"]) as w:
        w.start()                 # LaunchError (126/127) / ValueError (bad --pid) before anything runs
        report = w.watch()        # blocks until the job ends (or --duration / a stop signal)
        ...write the report...
        code = w.finish()         # launch: the job's exit code (waits if --duration left it running)

Samplers run on background threads and never touch the job; a sampler that fails is recorded
and the others go on. The report is a normal gpudiag report (mode "watch") whose `probes` hold
`system` (fast facts, no torch import), `driver` (NVML, when present) and `watch`.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, ContextManager, Dict, List, Optional, Sequence

from gpudiag.backends import nvml as nvml_backend
from gpudiag.watch import access, analysis, pyspy
from gpudiag.watch import recommend as watch_rec
from gpudiag.watch.diagnose import verdicts as watch_verdicts
from gpudiag.watch.job import Job, SignalHandling, describe_end, exit_code_for, redact_command

DEFAULT_INTERVAL_S = 0.5
# Every how many GIL samples py-spy also unwinds native stacks (which pauses the job briefly and
# costs py-spy ~4x the CPU of a plain dump) to see threads waiting for the GIL; 0 = never.
# Chosen with benchmarks/watch_overhead.py (docs/watch.md, "Cost").
DEFAULT_NATIVE_EVERY = 4
MIN_INTERVAL_S = 0.02
# The live status line's job CPU is the last few seconds' (what the job does now); its memory growth is
# over a longer window, as one tick's allocations would make a rate of a few seconds jump.
LIVE_CPU_WINDOW_S = 5.0
LIVE_MEMORY_WINDOW_S = 30.0
_AUTO = object()


def _py_spy_version(binary: str) -> Optional[str]:
    """py-spy's version ("0.4.3") from `py-spy --version`, or None when it does not
    answer: the report says which tool took the GIL samples."""
    try:
        out = subprocess.run([binary, "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode("utf-8", "replace").strip()
    return text.split()[-1] if text else None


def _cpu_snapshot(psutil: Any) -> Dict[int, tuple]:
    """{pid: (name, cpu seconds)} of every readable process, to name what else kept the machine busy."""
    snap = {}
    try:
        for p in psutil.process_iter(["name", "cpu_times"]):
            ct = p.info.get("cpu_times")
            if ct is not None:
                snap[p.pid] = (p.info.get("name"), ct.user + ct.system)
    except Exception:  # kept broad: a busy-machine hint runs outside watch()'s report guard and must never
        # stop the watch or cost the job's exit code (psutil itself raises OSError or psutil.Error here)
        pass
    return snap


class WatchSession:
    """See the module docstring. Seams for tests: nvml_lib, py_spy (path or None), psutil, root."""

    def __init__(self, command: Optional[Sequence[str]] = None, pid: Optional[int] = None,
                 duration_s: Optional[float] = None, interval_s: float = DEFAULT_INTERVAL_S,
                 identify: bool = True, gil: bool = True, nvml_lib: Any = None, py_spy: Any = _AUTO,
                 psutil: Any = None, root: str = "/", native_every: int = DEFAULT_NATIVE_EVERY, nvml: bool = True):
        if (command is None) == (pid is None):
            raise ValueError("give a command to launch or --pid to attach, not both")
        if psutil is None:
            import psutil
        self.psutil = psutil
        self.command = list(command) if command is not None else None
        self.pid = pid
        self.duration_s = duration_s
        self.interval_s = max(MIN_INTERVAL_S, float(interval_s))
        self.identify = identify
        self.gil_enabled = gil
        self.nvml_lib = nvml_lib
        self.nvml_enabled = nvml
        self.py_spy = pyspy.find_py_spy() if py_spy is _AUTO else py_spy
        self.root = root
        self.native_every = native_every
        self.job: Optional[Job] = None
        self._job_ref: List[Job] = []
        self._signals = SignalHandling(self._job_ref, attach=pid is not None)
        self._samplers: list = []
        self._nvml_cm: Optional[ContextManager[nvml_backend.Nvml]] = None
        self._nvml: Optional[nvml_backend.Nvml] = None
        self.nvml_reason = ""
        self.started_at: Optional[str] = None
        self.ended_by = None

    # ---- lifecycle

    def __enter__(self) -> "WatchSession":
        self._signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._stop_samplers()
        self._close_nvml()
        if exc and exc[0] is not None and self.job is not None and self.job.launched and self.job.poll():
            # gpudiag itself failed before the job ended: the job is the user's, keep it running
            # and keep its exit code meaningful by waiting for it.
            self.job.wait()
        self._signals.__exit__(*exc)

    def start(self) -> None:
        """Launch the command or attach to the pid; then open NVML and start the samplers."""
        from gpudiag.report.contract import utc_now_iso

        if self.command is not None:
            self.job = Job.launch(self.command, root=self.root)
        else:
            self.job = Job.attach(self.pid, psutil=self.psutil)
        self._job_ref.append(self.job)
        self.started_at = utc_now_iso()
        self.t0 = time.monotonic()
        self._me = self.psutil.Process(os.getpid())
        self._cpu0 = self._me.cpu_times()
        self._others0 = _cpu_snapshot(self.psutil)
        self._start_cpu_limit()
        self._open_nvml()
        self._start_samplers()

    def _start_cpu_limit(self) -> None:
        """The job's CPU limit and the throttling counters of its cgroup (the job's, not gpudiag's: an attached
        job may run in another container), read while the job runs: its affinity and cgroup are gone once it
        ends, while its cgroup's counters stay readable for the reading at the end."""
        from gpudiag import platform

        self.cpu_limit = platform.cpu_limit(pid=self.job.pid, root=self.root)
        self._throttle = platform.ThrottleMeter(pid=self.job.pid, root=self.root)
        self._throttle0 = self._throttle.read()
        self._throttle1 = None

    def _clock(self) -> float:
        """Seconds since the watch started (monotonic): the time axis every sampler stamps."""
        return time.monotonic() - self.t0

    def _open_nvml(self) -> None:
        """Opens the NVML session the GPU sampler and the driver probe share; keeps the reason
        for the report instead when NVML is unavailable or turned off (--no-gpu)."""
        if not self.nvml_enabled:
            self.nvml_reason = "turned off with --no-gpu"
            return
        try:
            self._nvml_cm = nvml_backend.session(self.nvml_lib)
            self._nvml = self._nvml_cm.__enter__()
        except nvml_backend.NvmlUnavailable as exc:
            self._nvml_cm, self._nvml = None, None
            self.nvml_reason = str(exc)

    def _close_nvml(self) -> None:
        """Shuts the NVML session if one is open; safe to call twice (watch() and __exit__ both do)."""
        if self._nvml_cm is not None:
            self._nvml_cm.__exit__(None, None, None)
            self._nvml_cm = self._nvml = None

    def _start_samplers(self) -> None:
        """Creates and starts the process sampler, the GIL sampler (py-spy found, --no-gil not
        given) and the GPU sampler (NVML open)."""
        from gpudiag import platform
        from gpudiag.watch.gpu import GpuSampler
        from gpudiag.watch.procs import ProcessSampler

        wsl = platform.wsl_version()
        self.procs = ProcessSampler(self.job.pid, self.interval_s, self._clock, psutil=self.psutil,
                                    memory_facts=lambda: platform.memory_facts(wsl=wsl))
        self._samplers = [self.procs]
        self.gil = None
        if self.gil_enabled and self.py_spy:
            self.gil = pyspy.GilSampler(self.py_spy, self.procs.snapshot, self.interval_s, self._clock,
                                        launched=self.job.launched, native_every=self.native_every)
            self._samplers.append(self.gil)
        self.gpu = None
        if self._nvml is not None:
            self.gpu = GpuSampler(self._nvml, self.interval_s, self._clock)
            self._samplers.append(self.gpu)
        for s in self._samplers:
            s.start()

    def _stop_samplers(self) -> None:
        """Stops every sampler: all stop flags first and a py-spy mid-dump killed, so no sampler
        waits behind another; safe to call twice."""
        for s in self._samplers:
            s.request_stop()
        if getattr(self, "gil", None) is not None:
            self.gil.close()
        for s in self._samplers:
            s.stop()
        self._samplers = []

    # ---- watching

    def watch(self) -> Dict[str, Any]:
        """Sample until the job ends, --duration passes or a signal ends an attached watch; the report."""
        job = self.job
        while True:
            if not job.poll():
                self.ended_by = "job_ended"
                break
            if self.duration_s is not None and self._clock() >= self.duration_s:
                self.ended_by = "duration"
                break
            if self._signals.stop_requested is not None:
                self.ended_by = "signal"
                break
            time.sleep(0.05)
        self.watch_s = self._clock()
        self._throttle1 = self._throttle.read()
        cpu1 = self._me.cpu_times()
        self.watcher_cpu_s = (cpu1.user + cpu1.system) - (self._cpu0.user + self._cpu0.system)
        self._stop_samplers()
        others1 = _cpu_snapshot(self.psutil)
        try:
            return self._report(others1)
        except Exception as exc:  # like the runner: a gpudiag bug must not cost the user the job's exit code
            return self._failed_report(exc)
        finally:
            self._close_nvml()

    def _failed_report(self, exc: BaseException) -> Dict[str, Any]:
        """A report that says the analysis failed (and where), with the job's facts that are known."""
        import traceback

        from gpudiag import runner
        from gpudiag.report import contract
        from gpudiag.report.redact import redact

        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        try:
            job = self._job_data()
        except Exception:  # the same guard: keep what can be said
            job = {"pid": self.job.pid if self.job else None}
        res = runner.result("failed", f"the watch analysis failed: {type(exc).__name__}: {exc}{where}",
                            self.watch_s, {"job": job})
        rep = contract.build_report({"watch": res}, "watch", created_at=self.started_at, redacted=self.identify)
        return redact(rep, identify=self.identify)

    def finish(self) -> int:
        """The exit code: a launched job's own (waited for, signals still forwarded); 0 when attached."""
        if self.job is None or not self.job.launched:
            return 0
        return exit_code_for(self.job.wait())

    # ---- the report

    def _busiest_others(self, others1: Dict[int, tuple], exclude: set) -> List[dict]:
        """Up to five other processes that used over 5 % of a core on average during the watch,
        as {pid, name, cpu_cores}: what else kept the machine busy."""
        rows = []
        wall = max(self.watch_s, 1e-6)
        for pid, (name, cpu) in others1.items():
            if pid in exclude or pid not in self._others0:
                continue
            used = cpu - self._others0[pid][1]
            if used > 0.05 * wall:
                rows.append({"pid": pid, "name": name, "cpu_cores": used / wall})
        return sorted(rows, key=lambda r: -r["cpu_cores"])[:5]

    def _gil_parts(self, job_pids: set) -> Dict[str, Any]:
        """The `gil` and `input_wait` sections from the dumps of the job's main Python process, or
        skipped/failed with why (--no-gil, no py-spy, refused, no sample)."""
        if not self.gil_enabled:
            off = analysis.part("skipped", "turned off with --no-gil")
            return {"gil": off, "input_wait": dict(off)}
        if not self.py_spy:
            miss = analysis.part("skipped", pyspy.missing_reason(), advice=access.INSTALL_HINT)
            return {"gil": miss, "input_wait": analysis.part("skipped", "needs the GIL part (py-spy)")}
        g = self.gil
        main_pid = g.main_pid
        st = g.status.get(main_pid, {}) if main_pid is not None else {}
        samples = g.samples.get(main_pid, []) if main_pid is not None else []
        if not samples:
            if st.get("state") == "denied":
                sec = analysis.part("skipped", f"py-spy may not read the job's Python process (pid {main_pid}): "
                                     f"{st.get('error')}", advice=st.get("advice"))
            elif main_pid is None:
                sec = analysis.part("skipped", "the job has no Python process that py-spy can read "
                                     "(py-spy reads CPython only)")
            else:
                sec = analysis.part("failed", f"py-spy took no sample of pid {main_pid}: {st.get('error') or 'the job ended first'}")
            return {"gil": sec, "input_wait": analysis.part("skipped", "needs the GIL part (py-spy)")}
        rec = self.procs.procs.get(main_pid, {})
        labels = analysis.label_processes(self.procs.procs)
        thread_cpu = {}
        for tid, series in rec.get("threads", {}).items():
            if len(series) >= 2 and series[-1][0] > series[0][0]:
                thread_cpu[tid] = (series[-1][1] - series[0][1]) / (series[-1][0] - series[0][0])
        workers = {pid: s for pid, s in g.samples.items() if pid != main_pid}
        sec = analysis.gil_section(samples, {"pid": main_pid, "name": rec.get("name"), "label": labels.get(main_pid)},
                                   workers, thread_cpu)
        unreadable = [{"pid": pid, "state": s.get("state"), "error": s.get("error"), "advice": s.get("advice")}
                      for pid, s in g.status.items() if pid != main_pid and s.get("state") == "denied"]
        if unreadable:
            sec["workers_unreadable"] = unreadable
        if any(s.get("native_note") for s in g.status.values()):
            sec["native_note"] = next(s["native_note"] for s in g.status.values() if s.get("native_note"))
        return {"gil": sec, "input_wait": analysis.input_wait_section(samples)}

    def _report(self, others1: Dict[int, tuple]) -> Dict[str, Any]:
        """The redacted watch report: system and driver facts, every analysis section, the verdicts,
        findings and the recommendation."""
        from gpudiag import platform, runner
        from gpudiag.diagnose import cpu_limit
        from gpudiag.probes import driver as driver_probe
        from gpudiag.probes import system as system_probe
        from gpudiag.report import contract
        from gpudiag.report.redact import redact

        job = self.job
        procs = self.procs
        job_pids = set(procs.procs)
        job_pids.add(job.pid)
        t_sys = time.monotonic()
        sysdata = system_probe.collect(detailed_cpu=False, import_torch=False)
        results: Dict[str, Any] = {"system": runner.result("ok", "", time.monotonic() - t_sys, sysdata,
                                                           system_probe.findings_for(sysdata))}
        driver_data = None
        if self._nvml is not None:
            t_drv = time.monotonic()
            try:
                driver_data = driver_probe.collect(self._nvml)
                results["driver"] = runner.result("ok", "", time.monotonic() - t_drv, driver_data,
                                                  driver_probe.analyze(driver_data, own_pids=job_pids))
            except Exception as exc:  # best-effort facts around the watch: the watch itself must still be reported
                # (NVML's own errors are already n/a inside the data; this is a reader failing some other way)
                results["driver"] = runner.result("failed", f"{type(exc).__name__}: {exc}")
        else:
            results["driver"] = runner.result("skipped", self.nvml_reason or "NVML is not available")
        thread_names = {}
        if self.gil is not None:
            for ss in self.gil.samples.values():
                for s in ss:
                    for t in s["threads"]:
                        if t.get("tid") is not None:
                            thread_names[t["tid"]] = t.get("name")
        data: Dict[str, Any] = {"job": self._job_data()}
        data.update(self._gil_parts(job_pids))
        data["memory"] = analysis.memory_section(procs.procs, procs.memory_facts or sysdata.get("memory"), procs.denied)
        for p in data["memory"].get("processes") or []:
            if isinstance(p.get("cmdline"), list):  # workers' argv: secrets passed as their own argument too
                p["cmdline"] = redact_command(p["cmdline"], self.identify)
        if data["memory"]["status"] == "skipped":
            data["memory"]["advice"] = access.denied_advice(job.pid, job.launched)
        exclude = job_pids | {os.getpid()}
        data["cpu"] = analysis.cpu_section(procs.procs, thread_names, procs.machine, self.watcher_cpu_s
                                           + (self.gil.cost["cpu_s"] if self.gil else 0.0),
                                           procs.logical_cores, self._busiest_others(others1, exclude), procs.denied)
        # The job's CPU limit (by kind, never a cgroup path) and its cgroup's throttling over the watch.
        data["cpu"]["limit"] = cpu_limit.recorded(self.cpu_limit)
        data["cpu"]["throttling"] = platform.ThrottleMeter.delta(self._throttle0, self._throttle1)
        ps_names = {pid: (r.get("name")) for pid, r in procs.procs.items()}
        if self.gpu is not None:
            for d in self.gpu.devices:
                for row in d["samples"]:
                    for pid in (row.get("procs") or {}):
                        if pid not in ps_names:
                            try:
                                ps_names[pid] = self.psutil.Process(pid).name()
                            except self.psutil.Error:
                                ps_names[pid] = None
        data["gpu"] = analysis.gpu_section(self.gpu.devices if self.gpu else None, self.nvml_reason, job_pids,
                                           self.gpu.names if self.gpu else {}, ps_names)
        data["machine"] = {"logical_cores": procs.logical_cores,
                           "usable_cores": self.cpu_limit.get("usable_cores"),  # the job's, quota counted
                           "os": platform.KIND, "ptrace_scope": access.ptrace_scope(self.root)}
        data["sampling"] = self._sampling_data()
        vs = watch_verdicts(data, driver_data)
        findings = watch_rec.findings(data, vs)
        rec = watch_rec.recommend(data, vs)
        results["watch"] = runner.result("ok", "", self.watch_s, data, findings)
        rep = contract.build_report(results, "watch", created_at=self.started_at, redacted=self.identify,
                                    recommendation=rec)
        return redact(rep, identify=self.identify)

    def _job_data(self) -> Dict[str, Any]:
        """The `job` section: launch or attach, the redacted command, pid, how long and how it
        ended (an exit code only for a launched job, the only one whose code gpudiag sees)."""
        job = self.job
        running = job.poll() if job.launched else (self.ended_by != "job_ended")
        rc = job.returncode
        data = {"mode": "launch" if job.launched else "attach",
                "command": redact_command(job.argv or [], self.identify) if job.argv else None,
                "pid": job.pid, "started_at": self.started_at, "watched_s": round(self.watch_s, 3),
                "ended_by": self.ended_by, "still_running": bool(running)}
        if job.launched:
            data.update(exit_code=None if running else exit_code_for(rc), returncode=rc,
                        ended=describe_end(None if running else rc),
                        duration_s=round((job.ended - job.started) if job.ended else self.watch_s, 3),
                        tracer_declared=job.tracer_declared)
        else:
            data.update(exit_code=None, ended="still running" if running else
                        "ended while watched (its exit code is visible only to its parent)",
                        duration_s=round(self.watch_s, 3))
        return data

    def _sampling_data(self) -> Dict[str, Any]:
        """The `sampling` section: interval, py-spy and its version, each sampler's health, and
        the watcher's own CPU cost in cores, so a report says what watching cost."""
        gil_cost = self.gil.cost if self.gil else None
        pyspy_cpu = gil_cost["cpu_s"] if gil_cost and gil_cost["cpu_known"] else None
        total = self.watcher_cpu_s + (pyspy_cpu or 0.0)
        return {
            "interval_s": self.interval_s,
            "py_spy": os.path.basename(self.py_spy) if self.py_spy else None,
            "py_spy_version": _py_spy_version(self.py_spy) if self.py_spy and self.gil_enabled else None,
            "native_every": self.native_every,
            "samplers": {s.name: s.health() for s in (self.procs, self.gil, self.gpu) if s is not None},
            "overhead": {
                "watcher_cpu_s": round(self.watcher_cpu_s, 3), "py_spy_cpu_s": pyspy_cpu,
                "py_spy_dumps": gil_cost["dumps"] if gil_cost else 0,
                "py_spy_native_dumps": gil_cost["native_dumps"] if gil_cost else 0,
                "native_dump_wall_s": round(gil_cost["pause_upper_s"], 3) if gil_cost else 0.0,
                "cpu_cores": round(total / self.watch_s, 4) if self.watch_s > 0 else None,
                "note": "CPU used by the watcher and its py-spy runs while the job ran, in cores. Native dumps "
                        "pause the job while py-spy unwinds its threads, a part of native_dump_wall_s (which also "
                        "counts py-spy starting and reading symbols); benchmarks/watch_overhead.py measures the "
                        "effect on a job's throughput",
            },
        }

    def live_figures(self) -> Dict[str, Any]:
        """What the watch has seen so far, for the live status line (views.watch_view.status_line), read from
        the samplers while they run: {elapsed_s, cpu_cores, logical_cores, gil_held_fraction, gil_samples,
        memory_bytes, memory_growth_bytes_per_s, gpu_util_percent}; a figure not seen yet is None."""
        now = self._clock()
        out: Dict[str, Any] = {"elapsed_s": now, "cpu_cores": None, "logical_cores": None, "gil_held_fraction": None,
                               "gil_samples": 0, "memory_bytes": None, "memory_growth_bytes_per_s": None,
                               "gpu_util_percent": None}
        procs = getattr(self, "procs", None)
        if procs is not None:
            out["logical_cores"] = procs.logical_cores
            with procs.lock:
                series = [list(r["samples"]) for r in procs.procs.values()]
            cpu = 0.0
            totals: Dict[float, float] = {}  # the job's memory at each tick (PSS where read, else RSS)
            for rows in series:
                recent = [r for r in rows if isinstance(r.get("cpu"), (int, float)) and r["t"] >= now - LIVE_CPU_WINDOW_S]
                if len(recent) >= 2 and recent[-1]["t"] > recent[0]["t"]:
                    cpu += (recent[-1]["cpu"] - recent[0]["cpu"]) / (recent[-1]["t"] - recent[0]["t"])
                    out["cpu_cores"] = cpu
                for r in rows:
                    v = r.get("pss") if isinstance(r.get("pss"), (int, float)) else r.get("rss")
                    if isinstance(v, (int, float)):
                        totals[r["t"]] = totals.get(r["t"], 0.0) + v
            if totals:
                ticks = sorted(totals)
                out["memory_bytes"] = totals[ticks[-1]]
                first = next(t for t in ticks if t >= ticks[-1] - LIVE_MEMORY_WINDOW_S)
                if ticks[-1] - first >= 2.0:
                    out["memory_growth_bytes_per_s"] = (totals[ticks[-1]] - totals[first]) / (ticks[-1] - first)
        gil = getattr(self, "gil", None)
        if gil is not None and gil.main_pid is not None:
            dumps = list(gil.samples.get(gil.main_pid, []))
            if dumps:
                held = sum(1 for d in dumps if any(t["state"] == pyspy.HOLDS for t in d["threads"]))
                out["gil_held_fraction"], out["gil_samples"] = held / len(dumps), len(dumps)
        gpu = getattr(self, "gpu", None)
        if gpu is not None:
            utils = [d["samples"][-1].get("util") for d in list(gpu.devices) if d.get("samples")]
            utils = [u for u in utils if isinstance(u, (int, float))]
            if utils:
                out["gpu_util_percent"] = sum(utils) / len(utils)
        return out

    def describe(self) -> str:
        """One line for stderr once the job runs: what is watched, how often, and which parts run."""
        job = self.job
        what = f"pid {job.pid}" + (" (attached; it keeps running)" if not job.launched else "")
        if self.gil is not None:
            gil = "py-spy"
        elif not self.gil_enabled:
            gil = "off"
        else:
            gil = "skipped (" + pyspy.missing_reason() + ")"
        if self.gpu is not None:
            gpu = f"NVML, {len(self.gpu.devices)} GPU(s)"
        else:
            gpu = "skipped (" + (self.nvml_reason or "no NVML") + ")"
        until = f"for {self.duration_s:g} s" if self.duration_s else ("until it ends" if job.launched
                                                                       else "until Ctrl-C or it ends")
        return (f"gpudiag watch: watching {what} every {self.interval_s:g} s {until}; GIL: {gil}; GPU: {gpu}")
