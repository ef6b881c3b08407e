"""The view of `probes.watch` (HTML and Markdown sections, timelines as inline SVG) and its terminal summary.

Rendered from the report JSON alone, like every view (docs/report-views.md). The charts are
built with gpudiag.views.charts, so they share the report's style: GPU utilisation over time,
memory per process with the projected limit line, and the GIL holder share per thread.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from gpudiag.report.values import as_dict, as_list, num
from gpudiag.units import fmt_byte_rate, fmt_bytes, fmt_duration, fmt_pct
from gpudiag.views import charts
from gpudiag.views.format import chart, table

_MiB = 2 ** 20
GIL_BINS = 40


def _ci(ci: Any) -> str:
    """A 95 % interval of a fraction as "40-55 %", "n/a" when absent."""
    if isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None and num(ci[1]) is not None:
        return f"{ci[0] * 100:.0f}-{ci[1] * 100:.0f} %"
    return "n/a"


# ------------------------------------------------------------------ charts

def gpu_chart(dev: dict) -> Optional[str]:
    """GPU utilisation (ring buffer where the driver keeps one, else the per-tick rate) and memory used %."""
    ring = [(p[0], p[1]) for p in as_list(dev.get("ring")) if isinstance(p, list) and len(p) == 2]
    ticks = [p for p in as_list(dev.get("timeline")) if isinstance(p, list) and len(p) == 3]
    series = []
    if ring:
        series.append({"name": "GPU utilisation (driver sample buffer)", "points": ring})
    else:
        series.append({"name": "GPU utilisation", "points": [(t, u) for t, u, _ in ticks if num(u) is not None]})
    total = num(dev.get("memory_total_bytes"))
    if total:
        series.append({"name": "memory used (% of total)",
                       "points": [(t, m / total * 100) for t, _, m in ticks if num(m) is not None]})
    return charts.line_chart(series, title=f"GPU {dev.get('index')}: utilisation over the run", x_label="time (s)",
                             y_label="%", y_max=100.0)


def memory_chart(mem: dict) -> Optional[str]:
    """Memory per process (MiB) over time, the job's total, its projection and the limit line."""
    series = []
    for s in as_list(mem.get("series"))[:5]:
        pts = [(p[0], p[1] / _MiB) for p in as_list(s.get("points")) if isinstance(p, list) and len(p) == 2]
        if pts:
            series.append({"name": f"{s.get('label')} ({s.get('metric')})", "points": pts})
    total = [(p[0], p[1] / _MiB) for p in as_list(mem.get("job_total")) if isinstance(p, list) and len(p) == 2]
    if len(as_list(mem.get("series"))) > 1 and total:
        series.append({"name": "job total", "points": total})
    proj = as_dict(mem.get("projection"))
    refs = []
    secs, headroom = num(proj.get("seconds_to_limit")), num(proj.get("headroom_bytes"))
    if total and headroom is not None:
        t_end, last = total[-1]
        limit_line = last + headroom / _MiB
        span = max(t_end - total[0][0], 1.0)
        if secs is not None and secs <= 3 * span:
            series.append({"name": "job total, projected at the measured rate",
                           "points": [(t_end, last), (t_end + secs, limit_line)]})
            refs.append({"y": limit_line, "label": f"memory limit ({proj.get('limit_source')})"})
        elif secs is not None:
            rate = num(proj.get("job_growth_bytes_per_s")) or 0.0
            series.append({"name": f"projected (limit reached in {fmt_duration(secs)})",
                           "points": [(t_end, last), (t_end + span, last + rate * span / _MiB)]})
    if not series:
        return None
    return charts.line_chart(series, title="Memory per process over the run", x_label="time (s)",
                             y_label="MiB", ref_lines=refs)


def gil_chart(gil: dict) -> Optional[str]:
    """Share of samples per time bin in which each thread held the GIL (top 4 threads) and anyone did."""
    tl = [as_dict(r) for r in as_list(gil.get("timeline")) if num(as_dict(r).get("t_s")) is not None]
    if len(tl) < 2:
        return None
    t0, t1 = tl[0]["t_s"], tl[-1]["t_s"]
    width = max((t1 - t0) / min(GIL_BINS, max(2, len(tl) // 3)), 1e-6)
    top = [t.get("name") for t in as_list(gil.get("threads"))[:4]]
    bins: Dict[int, List[dict]] = {}
    for r in tl:
        bins.setdefault(int((r["t_s"] - t0) / width), []).append(r)
    series = []
    for name in top:
        series.append({"name": f"{name} holds it", "points": [
            (t0 + (b + 0.5) * width, 100.0 * sum(1 for r in rs if r.get("holder") == name) / len(rs))
            for b, rs in sorted(bins.items())]})
    series.append({"name": "any thread holds it", "points": [
        (t0 + (b + 0.5) * width, 100.0 * sum(1 for r in rs if r.get("holder") is not None) / len(rs))
        for b, rs in sorted(bins.items())]})
    return charts.line_chart(series, title="Who holds the GIL over the run", x_label="time (s)",
                             y_label="% of samples", y_max=100.0)


# ------------------------------------------------------------------ the section

def _part_note(name: str, sec: dict) -> Optional[str]:
    """A note for a watch part that did not run (status, reason, advice), None when it ran ok."""
    if sec.get("status") == "ok":
        return None
    text = f"{name}: {sec.get('status', 'n/a')} - {sec.get('reason') or 'no reason given'}"
    if sec.get("advice") and sec.get("advice") not in text:
        text += f" (what to do: {sec['advice']})"
    return text


def view(data: dict) -> dict:
    """kv, tables, charts and notes of the watch section (see gpudiag.views.sections.probe_sections)."""

    gil, mem, cpu, gpu, inp = (as_dict(data.get(k)) for k in ("gil", "memory", "cpu", "gpu", "input_wait"))
    samp = as_dict(data.get("sampling"))
    over = as_dict(samp.get("overhead"))
    kv = job_facts(data) + [
        ("Sampling", f"every {samp.get('interval_s')} s; py-spy {samp.get('py_spy_version') or 'n/a'}; "
                     f"{over.get('py_spy_dumps', 0)} dumps ({over.get('py_spy_native_dumps', 0)} with native stacks)"),
        ("Watch cost", f"{num(over.get('cpu_cores')) or 0:.3f} cores of CPU (watcher and py-spy); "
                       f"{over.get('py_spy_native_dumps', 0)} native dumps paused the job briefly each")]
    notes = [n for n in (_part_note(k, as_dict(data.get(k))) for k in ("gil", "input_wait", "memory", "cpu", "gpu")) if n]
    charts_out, tables = [], []
    if gil.get("status") == "ok":
        kv += [("GIL held", f"{fmt_pct(gil.get('held_fraction'))} of {gil.get('samples')} samples "
                            f"(95 % interval {_ci(gil.get('held_ci95'))})"),
               ("GIL wanted (held or waited for)", f"{fmt_pct(gil.get('wanted_fraction'))} of {gil.get('native_samples')} "
                                                   f"samples with native stacks (interval {_ci(gil.get('wanted_ci95'))})"
                if gil.get("wanted_fraction") is not None else f"n/a ({gil.get('wait_detection_reason')})"),
               ("Contended (someone waited while it was held)", fmt_pct(gil.get("contended_fraction"))),
               ("Threads", f"{gil.get('python_threads')} Python threads, {gil.get('threads_wanting_gil')} want the GIL")]
        trows = [[t.get("name"), t.get("native_id"), fmt_pct(t.get("gil_fraction")), fmt_pct(t.get("gil_wait_fraction")),
                  fmt_pct(t.get("active_fraction")), fmt_pct(t.get("runs_without_gil_fraction")),
                  "n/a" if num(t.get("cpu_cores")) is None else f"{t['cpu_cores']:.2f}"]
                 for t in map(as_dict, as_list(gil.get("threads")))]
        charts_out.append(chart("chart-watch-gil", "GIL holder share", gil_chart(gil),
                                "Share of samples in each time slice in which each thread held the GIL. Several "
                                "threads at a third each while 'any' stays near 100 % is the GIL serialising them.",
                                table("Python threads", ["thread", "native id#", "holds GIL#", "waits for GIL#",
                                                         "active#", "runs without GIL#", "CPU cores#"], trows)))
    if inp.get("status") == "ok" and inp.get("loader_seen"):
        kv.append(("Waiting for DataLoader batches", f"{fmt_pct(inp.get('fraction'))} of samples "
                                                     f"(interval {_ci(inp.get('ci95'))})"))
    if mem.get("status") == "ok":
        proj = as_dict(mem.get("projection"))
        kv.append(("Job memory peak", fmt_bytes(mem.get("job_peak_bytes"))))
        first = as_dict(proj.get("first_to_hit"))
        if num(proj.get("seconds_to_limit")) is not None:
            kv.append(("Projection", f"the {proj.get('limit_source')} limit ({fmt_bytes(proj.get('limit_bytes'))}, "
                                     f"{fmt_bytes(proj.get('headroom_bytes'))} left) is reached in about "
                                     f"{fmt_duration(proj.get('seconds_to_limit'))} at {fmt_byte_rate(proj.get('job_growth_bytes_per_s'))}; "
                                     f"first to be killed: pid {first.get('pid')} ({first.get('role')})"))
        else:
            kv.append(("Projection", f"{proj.get('reason') or 'n/a'} (limit: {proj.get('limit_source')}, "
                                     f"{fmt_bytes(proj.get('headroom_bytes'))} left)"))
        mrows = [[p.get("label"), p.get("pid"), p.get("name"), fmt_bytes(p.get("peak_rss_bytes")),
                  fmt_bytes(p.get("peak_uss_bytes")), fmt_bytes(p.get("peak_pss_bytes")),
                  fmt_byte_rate(p.get("growth_bytes_per_s")) + (f" ({p.get('growth_metric')})" if p.get("growth_metric") else ""),
                  "yes" if p.get("growing") else "no",
                  "to the end" if p.get("present_at_end") else f"ended at {p.get('ended_s') or p.get('first_seen_s')} s"]
                 for p in map(as_dict, as_list(mem.get("processes")))]
        charts_out.append(chart("chart-watch-memory", "Memory per process", memory_chart(mem),
                                "Each process's memory over the run; the dashed line is the memory limit the "
                                "projection counts against, and the last line extends the job's total at its "
                                "measured growth rate.",
                                table("Processes", ["process", "pid#", "name", "peak RSS#", "peak USS#", "peak PSS#",
                                                    "growth#", "growing", "state"], mrows)))
        notes += [str(x) for x in as_list(mem.get("notes"))]
    if cpu.get("status") == "ok":
        kv.append(("CPU", f"job {num(cpu.get('job_cpu_cores')) or 0:.2f} cores on average of {cpu.get('logical_cores')}; "
                          f"other programs {num(cpu.get('background_cpu_cores')) or 0:.2f} cores"))
    if _cpu_limit_text(cpu):
        kv.append(("CPU limit", _cpu_limit_text(cpu)))
        crows = [[p.get("label"), p.get("pid"), "n/a" if num(p.get("cpu_cores")) is None else f"{p['cpu_cores']:.2f}",
                  ", ".join(f"{t.get('name') or t.get('native_id')}: {t['cpu_cores']:.2f}"
                            for t in as_list(p.get("threads"))[:4])]
                 for p in map(as_dict, as_list(cpu.get("processes")))]
        tables.append(table("CPU per process", ["process", "pid#", "cores#", "busiest threads (cores)"], crows))
    for dev in map(as_dict, as_list(gpu.get("devices"))):
        up = as_dict(dev.get("utilization_percent"))
        gaps = as_dict(dev.get("idle_gaps"))
        kv.append((f"GPU {dev.get('index')} {dev.get('name') or ''}".strip(),
                   f"busy {fmt_pct(dev.get('busy_fraction'))}, idle in {fmt_pct(dev.get('idle_fraction'))} of samples "
                   f"({dev.get('utilization_source')}, {up.get('n')} samples); {gaps.get('count', 0)} idle gaps, "
                   f"longest {', '.join(str(g.get('duration_s')) + ' s' for g in as_list(gaps.get('longest'))[:3]) or 'none'}"))
        if dev.get("job_memory_reason"):
            notes.append(f"GPU {dev.get('index')}: per-process memory {dev['job_memory_reason']}")
        prow = [[p.get("pid"), p.get("name"), "job", ", ".join(as_list(p.get("kinds"))), fmt_bytes(p.get("used_memory_peak_bytes")),
                 p.get("first_seen_s")] for p in map(as_dict, as_list(dev.get("job_processes")))]
        prow += [[p.get("pid"), p.get("name"), "other" + (" (appeared mid-run)" if p.get("appeared_mid_run") else ""),
                  ", ".join(as_list(p.get("kinds"))), fmt_bytes(p.get("used_memory_peak_bytes")), p.get("first_seen_s")]
                 for p in map(as_dict, as_list(dev.get("other_processes")))]
        charts_out.append(chart(f"chart-watch-gpu{dev.get('index')}", f"GPU {dev.get('index')} utilisation",
                                gpu_chart(dev), "What NVML saw while the job ran: a kernel ran in the sample when "
                                "utilisation is above 0; long stretches at 0 are idle gaps.",
                                table("Processes on the GPU", ["pid#", "name", "whose", "kind", "peak memory#",
                                                               "first seen s#"], prow)))
    return {"kv": kv, "charts": charts_out, "tables": tables, "notes": notes}


def choice_table(rec: dict) -> dict:
    """The recommendation's 'choice' table for a watch report (no cycles/s: watch does not time strategies)."""

    ci = rec.get("speedup_ci95")
    ci_text = (f"{ci[0]:.2f}-{ci[1]:.2f}x" if isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None
               and num(ci[1]) is not None else "n/a")
    return table("Recommended change", ["strategy", "workers#", "predicted speedup#", "95 % interval#", "confidence",
                                        "why this confidence"],
                 [[rec.get("strategy") or "n/a", rec.get("workers") if rec.get("workers") is not None else "n/a",
                   f"{rec['speedup']:.2f}x" if num(rec.get("speedup")) is not None else "n/a", ci_text,
                   rec.get("confidence") or "n/a", rec.get("confidence_reason") or ""]],
                 "A predicted speedup is the watch's estimate of what the change gains (docs/watch.md, \"DataLoader "
                 "workers\"): the rest of a watch names no number, as it sees where time goes, not what a change "
                 "would gain.", stack=True)


# ------------------------------------------------------------------ terminal

def key_figures(data: dict) -> List[Tuple[str, str]]:
    """(label, one line) for the GIL, memory, CPU and each GPU: the terminal summary and the report's first screen."""
    gil, mem, gpu, cpu = (as_dict(data.get(k)) for k in ("gil", "memory", "gpu", "cpu"))
    out = []
    if gil.get("status") == "ok":
        wanted = (f", wanted (held or waited for) {fmt_pct(gil.get('wanted_fraction'))} of {gil.get('native_samples')} "
                  "native samples" if gil.get("wanted_fraction") is not None else "")
        out.append(("GIL", f"held {fmt_pct(gil.get('held_fraction'))} of {gil.get('samples')} samples "
                           f"(95 % {_ci(gil.get('held_ci95'))}){wanted}; " + ", ".join(
                               f"{as_dict(t).get('name')} {fmt_pct(as_dict(t).get('gil_fraction'))}"
                               for t in as_list(gil.get("threads"))[:4])))
    else:
        out.append(("GIL", f"{gil.get('status')}: {gil.get('reason')}"))
    if mem.get("status") == "ok":
        procs = [as_dict(p) for p in as_list(mem.get("processes"))]
        grow = [p for p in procs if p.get("growing")]
        text = f"peak {fmt_bytes(mem.get('job_peak_bytes'))}"
        if grow:
            text += "; growing: " + ", ".join(f"{p.get('label')} {fmt_byte_rate(p.get('growth_bytes_per_s'))}" for p in grow[:4])
        proj = as_dict(mem.get("projection"))
        if num(proj.get("seconds_to_limit")) is not None:
            first = as_dict(proj.get("first_to_hit"))
            label = next((p.get("label") for p in procs if p.get("pid") == first.get("pid")), None)
            text += (f"; at this rate {label or 'pid ' + str(first.get('pid'))} is the first killed, in about "
                     f"{fmt_duration(proj.get('seconds_to_limit'))} ({proj.get('limit_source')} limit)")
        out.append(("memory", text))
    else:
        out.append(("memory", f"{mem.get('status')}: {mem.get('reason')}"))
    if cpu.get("status") == "ok":
        out.append(("CPU", f"job {num(cpu.get('job_cpu_cores')) or 0:.2f} cores, others "
                           f"{num(cpu.get('background_cpu_cores')) or 0:.2f} of {cpu.get('logical_cores')}"))
    if _cpu_limit_text(cpu):
        out.append(("CPU limit", _cpu_limit_text(cpu)))
    if gpu.get("status") == "ok":
        for dev in map(as_dict, as_list(gpu.get("devices"))):
            others = as_list(dev.get("other_processes"))
            out.append((f"GPU {dev.get('index')}", f"busy {fmt_pct(dev.get('busy_fraction'))}, idle in "
                                                   f"{fmt_pct(dev.get('idle_fraction'))} of samples"
                        + (f"; other processes: {len(others)}" if others else "")))
    else:
        out.append(("GPU", f"{gpu.get('status')}: {gpu.get('reason')}"))
    return out


def job_command(job: dict) -> Tuple[str, str]:
    """The job's command line (as redacted when the report was written) and how it was watched ("launched pid 41")."""
    cmd = " ".join(str(a) for a in as_list(job.get("command"))) or "n/a"
    how = {"launch": "launched", "attach": "attached to"}.get(str(job.get("mode")), "watched")
    return cmd, f"{how} pid {job.get('pid')}"


def job_facts(data: dict) -> List[Tuple[str, str]]:
    """The job as the report's first screen names it: its command (as redacted when the report was
    written), its exit code and how it ended, how long it ran."""
    job = as_dict(data.get("job"))
    cmd, how = job_command(job)
    code = job.get("exit_code")
    ended = str(job.get("ended") or "n/a")
    if not isinstance(code, int) or isinstance(code, bool):
        code_text = f"n/a: {ended}"
    else:
        code_text = str(code) if ended == f"exited with code {code}" else f"{code}: {ended}"
    return [("Job", f"{cmd} ({how})"), ("Exit code", code_text),
            ("Duration", f"{num(job.get('duration_s')) or 0:.1f} s")]


def lead(data: dict, rec: dict) -> dict:
    """What a watch report opens with: the job, the recommended change, and one line per measured part."""
    change = rec.get("strategy") or "none"
    if rec.get("strategy") and rec.get("workers") is not None:
        change += f", {rec['workers']} worker{'' if rec['workers'] == 1 else 's'}"
    change += f" (confidence {rec.get('confidence') or 'n/a'}"
    change += f": {rec['confidence_reason']})" if rec.get("confidence_reason") else ")"
    figures = [(k if k.startswith(("GIL", "CPU", "GPU")) else k.capitalize(), v) for k, v in key_figures(data)]
    cmd, how = job_command(as_dict(data.get("job")))
    return {"command": cmd, "how": how, "job": job_facts(data)[1:], "change": change,
            "figures": predicted_gain(rec) + figures}


def predicted_gain(rec: dict) -> List[Tuple[str, str]]:
    """The predicted gain of a recommended change and the settings to change, as the lead's first rows
    ('Predicted gain', '1.81x the steps per second (95 % interval 1.51-2.00x) ...'); [] when the watch
    predicted none (it predicts DataLoader workers for a main thread that loads its own batches)."""
    speed, ci = num(rec.get("speedup")), rec.get("speedup_ci95")
    if speed is None:
        return []
    pred = as_dict(rec.get("prediction"))
    text = f"{speed:.2f}x the steps per second"
    if isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None and num(ci[1]) is not None:
        text += f" (95 % interval {ci[0]:.2f}-{ci[1]:.2f}x)"
    if num(pred.get("share")) is not None:
        text += (f", from the main thread loading in {fmt_pct(pred['share'])} of {pred.get('samples')} samples of the "
                 f"loop (95 % {_ci(pred.get('share_ci95'))})")
        if pred.get("cores"):
            text += f" on {pred['cores']} usable core{'s' if pred['cores'] != 1 else ''}"
    rows = [("Predicted gain", text)]
    settings = as_dict(rec.get("settings"))
    if settings:
        rows.append(("Settings to change", "DataLoader(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"))
    return rows


def render_terminal(report: dict, files: Optional[Dict[str, str]] = None) -> str:
    """The watch's summary for stderr: outcome, GIL, memory, GPU, the recommendation, files written."""
    data = as_dict(as_dict(as_dict(report.get("probes")).get("watch")).get("data"))
    job = as_dict(data.get("job"))
    lines = [f"gpudiag watch: the job {job.get('ended') or 'n/a'} after {num(job.get('duration_s')) or 0:.1f} s "
             f"(pid {job.get('pid')})"]
    lines += [f"  {label:<8} {text}" for label, text in key_figures(data)]
    sev = [f for f in as_list(as_dict(as_dict(report.get("probes")).get("watch")).get("findings"))
           if as_dict(f).get("severity") in ("critical", "warning")]
    for f in sev[:4]:
        lines.append(f"  [{f['severity']}] {f['code']}: {f['message']}")
    rec = as_dict(report.get("recommendation"))
    if rec.get("headline"):
        lines.append(f"Recommendation ({rec.get('confidence')}): {rec['headline']}")
    for kind, path in (files or {}).items():
        lines.append(f"Wrote {kind}: {path}")
    return "\n".join(lines)


def _cpu_limit_text(cpu: dict) -> str:
    """'the job's: a CPU limit of 0.5 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup), 1 usable core; throttled in 96 %
    of 50 periods (2.40 s stalled)', or '' when nothing limits the job's CPU."""
    from gpudiag.diagnose import cpu_limit

    limit = cpu.get("limit")
    if not cpu_limit.limit_text(limit):
        return ""
    n = cpu_limit.usable_cores(limit)
    text = f"{cpu_limit.limit_text(limit)}, {n} usable core{'s' if n != 1 else ''}"
    thr = cpu_limit.throttling_text(limit, cpu.get("throttling"))
    return text + (f"; {thr} during the watch" if thr else "")


def status_line(fig: dict) -> str:
    """The live status line of a running watch (session.live_figures): 'gpudiag watch 12 s | job CPU 0.98
    of 2 cores | GIL 97 % (40 samples) | memory 363 MiB, +1.4 MiB/s | GPU 45 %'; figures not seen yet are
    left out. ASCII only: any terminal encoding can show it."""
    parts = [f"gpudiag watch {num(fig.get('elapsed_s')) or 0:.0f} s"]
    cpu = num(fig.get("cpu_cores"))
    if cpu is not None:
        of = f" of {fig['logical_cores']}" if fig.get("logical_cores") else ""
        parts.append(f"job CPU {cpu:.2f}{of} cores")
    if num(fig.get("gil_held_fraction")) is not None:
        parts.append(f"GIL {fmt_pct(fig['gil_held_fraction'])} ({fig.get('gil_samples')} samples)")
    if num(fig.get("memory_bytes")) is not None:
        grow = num(fig.get("memory_growth_bytes_per_s"))
        sign = "+" if grow is not None and grow >= 0 else "-"
        parts.append(f"memory {fmt_bytes(fig['memory_bytes'])}"
                     + (f", {sign}{fmt_byte_rate(abs(grow))}" if grow is not None else ""))
    if num(fig.get("gpu_util_percent")) is not None:
        parts.append(f"GPU {fig['gpu_util_percent']:.0f} %")
    return " | ".join(parts)
