"""`gpudiag env`: the environment as GitHub-ready Markdown, fast (no torch import, no py-cpuinfo).

Every field `python -m torch.utils.collect_env` prints has a row under its own label (views/
env_fields.py), with the value or why it is not shown, plus what collect_env cannot say: distro,
WSL and its memory cap, container, GIL build, cgroup limits and OOM kills, CPU instruction sets,
driver model, open/proprietary kernel module, PCIe link, the processes holding the GPU, and
CUDA packages checked against torch's build. The facts are collected by probes/env_facts.py (the
`system` and `driver` probes' collectors); this module only renders them, and everything printed
passes through redaction.
"""

from __future__ import annotations

from typing import Any, List, Optional

from gpudiag.views import env_fields
from gpudiag.units import fmt_bytes
from gpudiag.views.text import md_cell, md_code, md_text

NA = "n/a"


def _cell(value: Any) -> str:
    """A table cell: None -> 'unknown', pipes escaped, newlines flattened, no HTML."""
    if value is None or value == "":
        return "unknown"
    return md_cell(value)


def _code(value: Any) -> str:
    """A table cell shown as `code`: a backtick in the value cannot end the code span."""
    return _cell(value).replace("`", "'")


def _size(n: Any) -> str:
    """Bytes in units.fmt_bytes's words ("12 GiB", "512 MiB"), or "" when not a number, so _join drops the part."""
    return fmt_bytes(n, missing="")


def _join(*parts: Optional[str]) -> str:
    """The given parts that are set, joined with " · ": one table cell from optional facts."""
    return " · ".join(p for p in parts if p)


def _known(v: Any) -> bool:
    """True when a fact was read (neither missing nor the "n/a" an unsupported NVML query gives)."""
    return v is not None and v != NA


# ------------------------------------------------------------------ rendering

def _system_rows(s: dict) -> List[tuple]:
    """(label, value) table rows for OS, WSL, container, Python, CPU, RAM, cgroup and torch: the facts that change which parallelism works."""
    os_, py, cpu, mem, torch = (s.get(k) or {} for k in ("os", "python", "cpu", "memory", "torch"))
    rows = []
    distro = os_.get("pretty") or os_.get("name")
    if os_.get("distro_id"):
        like = f", like {os_['distro_like']}" if os_.get("distro_like") else ""
        distro = f"{distro} (`{os_['distro_id']}` {os_.get('distro_version') or ''}{like})".replace(" )", ")")
    rows.append(("OS", _join(distro, f"kernel {os_['kernel']}" if os_.get("kernel") else None, cpu.get("arch"))))
    if os_.get("wsl"):
        cap = _size(mem.get("wsl_memory_cap_bytes"))
        rows.append(("WSL", _join(f"WSL{os_['wsl']}", f"VM memory cap {cap}" if cap else None)))
    else:
        rows.append(("WSL", "no"))
    rows.append(("Container / VM", _join(os_.get("container") or "no container",
                                         os_.get("virtualization") or "no hypervisor seen")))
    gil = ("free-threaded build, GIL " + ("re-enabled" if py.get("gil_enabled") else "off")
           if py.get("free_threaded_build") else "standard build (GIL on)")
    rows.append(("Python", _join(f"{py.get('implementation')} {py.get('version')} ({py.get('bits')}-bit)", gil,
                                 f"switch interval {py['switch_interval_s'] * 1000:g} ms"
                                 if isinstance(py.get("switch_interval_s"), float) else None,
                                 f"default start method `{py.get('mp_start_method')}`")))
    cores = f"{cpu.get('physical_cores') or '?'} physical / {cpu.get('logical_cores') or '?'} logical cores"
    limit = cpu.get("limit") or {}
    usable = limit.get("usable_cores", cpu.get("affinity_cores"))  # a CPU quota counted, where read
    if usable and (usable != cpu.get("logical_cores") or limit.get("limited_by")):
        from gpudiag.diagnose import cpu_limit

        why = cpu_limit.limit_text(limit)
        cores += f", {usable} usable by this process under {why}" if why else f" ({usable} usable by this process)"
    mhz = cpu.get("freq_max_mhz") or cpu.get("freq_current_mhz")
    rows.append(("CPU", _join(cpu.get("brand"), cores, f"{mhz:g} MHz" if mhz else None)))
    rows += env_fields.cpu_feature_rows(s)
    swap = _size(mem.get("swap_total_bytes")) if mem.get("swap_total_bytes") else "none"
    rows.append(("RAM", _join(f"{fmt_bytes(mem.get('total_bytes'))} total, {fmt_bytes(mem.get('available_bytes'))} available",
                              f"swap {swap}")))
    if mem.get("cgroup_version") is not None:
        limit = _size(mem.get("cgroup_limit_bytes")) or "no limit"
        rows.append(("cgroup memory", _join(f"v{mem['cgroup_version']}: {limit}",
                                            f"{fmt_bytes(mem.get('cgroup_usage_bytes'))} used" if mem.get("cgroup_usage_bytes") is not None else None,
                                            f"{mem['cgroup_oom_kills']} OOM kills" if mem.get("cgroup_oom_kills") is not None else None)))
    rows.append(("Memory budget for new workers",
                 _join(_size(mem.get("budget_bytes")), f"limited by {mem['budget_source']}" if mem.get("budget_source") else None)))
    if mem.get("overcommit_memory") is not None or mem.get("oom_kills_since_boot") is not None:
        rows.append(("Overcommit / OOM kills", _join(
            f"vm.overcommit_memory={mem.get('overcommit_memory')}" if mem.get("overcommit_memory") is not None else None,
            f"{mem['oom_kills_since_boot']} OOM kills since boot" if mem.get("oom_kills_since_boot") is not None else None)))
    if torch.get("version"):
        cuda = torch.get("cuda_build")
        rows.append(("torch", _join(torch["version"], f"built for CUDA {cuda}" if cuda else "CPU-only build (no CUDA)",
                                    f"HIP {torch['hip']}" if torch.get("hip") else None)))
    else:
        rows.append(("torch", torch.get("reason_missing") or "not installed"))
    return rows


def _gpu_rows(drv: dict) -> List[tuple]:
    """(label, value) table rows for the NVIDIA driver, CUDA and each GPU, or one row saying why NVML was unavailable."""
    if "unavailable" in drv:
        return [("NVIDIA driver", drv["unavailable"])]
    d = drv.get("data") or {}
    rows = []
    km = d.get("kernel_module") or {}
    module = None
    if km.get("flavour"):
        module = f"{km['flavour']} kernel module" + (f" {km['version']}" if km.get("version") else "")
    elif km.get("reason"):
        module = ("no Linux kernel module (WSL2: the driver runs on Windows)"
                  if km["reason"].startswith("WSL2") else km["reason"])
    rows.append(("NVIDIA driver", _join(f"driver {d.get('driver_version')}",
                                        f"CUDA driver API {d.get('cuda_driver_version')}" if _known(d.get("cuda_driver_version")) else None,
                                        module,
                                        "MPS daemon running" if d.get("mps_daemon_running") else None)))
    win = d.get("windows") or {}
    if win:
        hags = (win.get("hags") or {}).get("enabled")
        tdr = (win.get("tdr") or {}).get("delay_s")
        rows.append(("Windows GPU settings", _join(
            f"HAGS {'on' if hags else 'off' if hags is False else 'unknown'}",
            f"TDR delay {tdr} s" if _known(tdr) else None)))
    for g in d.get("gpus") or []:
        if g.get("error"):
            rows.append((f"GPU {g.get('index')}", g["error"]))
            continue
        dm = g.get("driver_model") or {}
        model = None
        if _known(dm.get("current")):
            model = f"driver model {dm['current']}" + (
                f" (pending {dm['pending']})" if _known(dm.get("pending")) and dm.get("pending") != dm.get("current") else "")
        p = g.get("pcie") or {}
        link = None
        if _known(p.get("gen_current")) or _known(p.get("width_current")):
            link = f"PCIe Gen{p.get('gen_current')} x{p.get('width_current')}"
            gen_max = next((v for v in (p.get("gen_max_card"), p.get("gen_max_system")) if _known(v)), None)
            maxes = " ".join(x for x in (f"Gen{gen_max}" if gen_max is not None else None,
                                         f"x{p['width_max']}" if _known(p.get("width_max")) else None) if x)
            link += f" (max {maxes}; idle links downtrain)" if maxes else " (idle links downtrain)"
        rows.append((f"GPU {g.get('index')}", _join(
            g.get("name"), _size(g.get("memory_total_bytes")) and f"{_size(g['memory_total_bytes'])}"
            + (f", {_size(g['memory_free_bytes'])} free" if _size(g.get("memory_free_bytes")) else ""),
            model, link,
            f"persistence {'on' if g['persistence_mode'] else 'off'}" if isinstance(g.get("persistence_mode"), bool) else None,
            "display active" if g.get("display_active") is True else None)))
        procs = g.get("processes") or {}
        parts = []
        for kind in ("compute", "graphics"):
            rowsk = procs.get(kind)
            if rowsk == NA or rowsk is None:
                parts.append(f"{kind}: not reported by NVML")
            elif rowsk:
                parts.append(f"{kind}: " + ", ".join(
                    (r.get("name") or f"pid {r.get('pid')}")
                    + (f" ({_size(r['used_memory_bytes'])})" if _size(r.get("used_memory_bytes")) else "")
                    for r in rowsk))
            else:
                parts.append(f"{kind}: none")
        rows.append((f"GPU {g.get('index')} processes", "; ".join(parts)))
    return rows


def _gpu_details(drv: dict) -> List[str]:
    """One line per GPU with compute mode, MIG, clock event reasons, temperature (°C), power (W) and utilisation (%): the state that throttles or shares it."""
    d = drv.get("data") or {}
    out = []
    for g in d.get("gpus") or []:
        if g.get("error"):
            continue
        ce = g.get("clock_event_reasons") or {}
        mig = g.get("mig_mode") or {}
        items = [
            ("compute mode", g.get("compute_mode")),
            ("MIG mode", mig.get("current") if isinstance(mig, dict) else mig),
            ("clock event reasons", ", ".join(ce.get("active") or []) or "none" if isinstance(ce, dict) else ce),
            ("temperature", f"{g['temperature_c']} °C" if _known(g.get("temperature_c")) else NA),
            ("power", f"{g.get('power_draw_w')} W of {g.get('power_limit_w')} W"),
            ("utilization (instant)", f"{g.get('utilization_gpu_percent')} %"),
        ]
        out.append(f"GPU {g.get('index')}: " + "; ".join(
            f"{k} {'unknown' if v in (None, '') else str(v).replace(chr(10), ' ')}" for k, v in items))
    return out


def render(system_data: dict, driver: dict, packages: Optional[List[tuple]] = None, version: str = "") -> str:
    """Markdown from collected data (pure: tested with stand-in dicts). `packages` [(name, version)]
    is used only when the system data has no `packages` section."""
    lines = [f"### Environment (`gpudiag env` {version})", "", "| | |", "|---|---|"]
    for key, value in _system_rows(system_data) + _gpu_rows(driver):
        lines.append(f"| **{_cell(key)}** | {_cell(value)} |")
    lines += ["", "#### Field by field: `python -m torch.utils.collect_env`", "",
              "| collect_env field | value |", "|---|---|"]
    for key, value in env_fields.collect_env_rows(system_data, driver):
        lines.append(f"| **{_cell(key)}** | {_cell(value)} |")
    findings = list(system_data.get("findings") or []) + list(driver.get("findings") or [])
    order = {"critical": 0, "warning": 1, "info": 2}
    if findings:
        lines += ["", "**Findings**", ""]
        for f in sorted(findings, key=lambda f: order.get(f.get("severity"), 3)):
            lines.append(f"- **{md_text(f.get('severity'))}** `{_code(f.get('code'))}`: {md_text(f.get('message'))}")
    env = system_data.get("env") or {}
    lines += ["", "<details><summary>Environment variables (allowlisted only)</summary>", ""]
    if env:
        lines += ["| variable | value |", "|---|---|"] + [f"| `{_code(k)}` | `{_code(v)}` |" for k, v in env.items()]
    else:
        lines.append("None of the allowlisted CUDA/torch/threading variables is set.")
    lines += ["", "</details>"]
    details = _gpu_details(driver)
    if details:
        lines += ["", "<details><summary>GPU details</summary>", ""] + [f"- {md_text(d)}" for d in details] + ["", "</details>"]
    cpu = env_fields.cpu_rows(system_data)
    if cpu:
        lines += ["", "<details><summary>CPU (lscpu fields)</summary>", "", "| field | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in cpu] + ["", "</details>"]
    pkg_lines = env_fields.package_lines(system_data) if system_data.get("packages") else \
        [f"{n}=={v}" for n, v in (packages or [])]
    if pkg_lines:
        lines += ["", "<details><summary>Versions of relevant libraries</summary>", "", "```"]
        lines += [md_code(line) for line in pkg_lines] + ["```", "", "</details>"]
    lines += ["", "<sub>Hostname, username and home paths hashed or shown as ~ unless --no-redact; "
                  "secrets and GPU UUIDs are always removed.</sub>", ""]
    return "\n".join(lines)


def env_markdown(facts: dict, identify: bool = True) -> str:
    """The `gpudiag env` text, redacted, from the facts probes.env_facts.collect() gathered (the CLI collects
    them; a view never does)."""
    from gpudiag._version import __version__
    from gpudiag.report.redact import redact

    return redact(render(facts["system"], facts["driver"], None, __version__), identify=identify)
