"""Evidence for the rules: where each figure came from, and the report's parts every rule reads.

Figures carry a JSON-path-like source ("probes.cycle.data.strategies[3].cycles_per_s"); the cycle's
strategy rows are parsed once here, each with its index for those paths. The type-safe reads
themselves (get, num, probe_data...) are gpudiag.report.values; the units, gpudiag.units.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from gpudiag.diagnose.thresholds import CUDA_PROBES
from gpudiag.report.values import as_dict, as_int, as_list, as_str, get, interval, num, probe_data, probe_result


def path(*parts: Any) -> str:
    """('probes', 'cycle', 'data', 'strategies', 3, 'cycles_per_s') -> probes.cycle.data.strategies[3].cycles_per_s"""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def evidence(claim: str, value: Any, unit: Optional[str], source: str) -> dict:
    """One evidence row {claim, value, unit, source path}: every claim of the recommendation points at the figure behind it."""
    return {"claim": claim, "value": value, "unit": unit, "source": source}


def not_run_reason(report: dict, name: str) -> str:
    """Why a probe gave no data, in words: 'the pcie probe was skipped: no CUDA device ...'."""
    res = probe_result(report, name)
    status = res.get("status")
    why = as_str(res.get("reason"))
    if not res:
        return f"the {name} probe is not in this report"
    if status == "skipped":
        return f"the {name} probe was skipped" + (f": {why}" if why else "")
    if status == "failed":
        return f"the {name} probe failed" + (f": {why}" if why else "")
    if status == "ok":
        return f"the {name} probe ran but did not record this"
    return f"the {name} probe has no usable result (status {status!r})"


def base_name(name: Any) -> str:
    """'/usr/share/code/code' -> 'code'; 'C:\\...\\Code.exe' -> 'Code.exe'."""
    s = str(name or "?")
    return s.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or s


def link_text(gen: Optional[float], width: Optional[float]) -> str:
    """'Gen3 x16', 'Gen3', 'x8' or 'the link' from whatever of the two is known."""
    parts = ([f"Gen{gen:.0f}"] if gen is not None else []) + ([f"x{width:.0f}"] if width is not None else [])
    return " ".join(parts) or "the link"


def is_desktop_process(name: str, category: Optional[str] = None) -> bool:
    """A part of the desktop itself (display server, compositor, shell), which no one can close.

    The driver probe's own classification (`category` of a process row: display|app|mps|other)
    decides; for reports without it, the same classifier (gpudiag.platform.nvidia) is applied to
    the name. Desktop *programs* (a browser, VS Code) are category "app": closable.
    """
    if category is None:
        from gpudiag.platform.nvidia import classify_process

        category = classify_process(base_name(name))[0]
    return category == "display"


def verdict_entry(cause: str, verdict: str, summary: str, reason: str = "",
             figures: Optional[dict] = None, sources: Optional[dict] = None) -> dict:
    """One verdict {cause, verdict, summary, reason, figures, sources}: the shape every cause family returns, so the views read them alike."""
    return {"cause": cause, "verdict": verdict, "summary": summary, "reason": reason,
            "figures": figures or {}, "sources": sources or {}}


class Figures:
    """Collects figures and, for those read straight from the report, the path they came from."""

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {}
        self.sources: Dict[str, str] = {}

    def read(self, name: str, report: dict, *keys: Any, kind=num) -> Any:
        """The figure at report[keys...] converted by `kind` (None when absent or of the wrong type), recorded under `name` with its source path."""
        value = kind(get(report, *keys))
        self.values[name] = value
        if value is not None:
            self.sources[name] = path(*keys)
        return value

    def put(self, name: str, value: Any) -> Any:
        """A derived figure (computed from others): no source path of its own."""
        self.values[name] = value
        return value


def findings_with(report: dict, codes) -> List[Tuple[str, int, dict]]:
    """(probe name, index, finding) for every finding whose code is among `codes`, so a verdict can cite probes.<name>.findings[i]."""
    out = []
    for pname, res in as_dict(report.get("probes")).items():
        for i, f in enumerate(as_list(as_dict(res).get("findings"))):
            if isinstance(f, dict) and f.get("code") in codes:
                out.append((pname, i, f))
    return out


def rates_of(walls: Any, cycles: Any) -> Optional[List[float]]:
    """cycles/s of each timed round from a row's wall_s and cycles; None when either is missing or odd."""
    n = num(cycles)
    ws = [num(w) for w in as_list(walls)]
    if not n or n <= 0 or not ws or any(w is None or w <= 0 for w in ws):
        return None
    return [n / w for w in ws]


def strategy_rows(report: dict) -> List[dict]:
    """The cycle probe's strategy rows, each with its index (for source paths) and parsed numbers.

    `sweep` holds the worker counts a threads/processes row measured ({workers, cycles_per_s,
    speedup_ci95, samples, sweep_index}); a row without a sweep has its headline count only.
    """
    rows = []
    default_cycles = get(probe_data(report, "cycle"), "workload", "cycles")
    for i, row in enumerate(as_list(get(probe_data(report, "cycle"), "strategies"))):
        if not isinstance(row, dict) or not as_str(row.get("name")):
            continue
        cycles = row.get("cycles") if num(row.get("cycles")) else default_cycles
        sweep = []
        for j, e in enumerate(as_list(row.get("sweep"))):
            if isinstance(e, dict) and as_int(e.get("workers")) and num(e.get("cycles_per_s")) \
                    and as_str(e.get("status")) in (None, "ok"):
                sweep.append({"workers": as_int(e.get("workers")), "cycles_per_s": num(e.get("cycles_per_s")),
                              "speedup_ci95": interval(e.get("speedup_ci95")), "samples": as_int(e.get("samples")),
                              "rates": rates_of(e.get("wall_s"), cycles), "sweep_index": j})
        rows.append({
            "index": i, "name": row["name"], "status": as_str(row.get("status")),
            "reason": as_str(row.get("reason")) or "", "workers": as_int(row.get("workers")),
            "cycles_per_s": num(row.get("cycles_per_s")),
            "speedup_vs_serial": num(row.get("speedup_vs_serial")),
            "speedup_ci95": interval(row.get("speedup_ci95")),
            "samples": as_int(row.get("samples")) if row.get("samples") is not None else as_int(row.get("repeats")),
            "spread_fraction": num(row.get("spread_fraction")),
            "other_busy_cores": num(row.get("other_busy_cores")),
            "gpu_busy_fraction": num(row.get("gpu_busy_fraction")),
            "rates": rates_of(row.get("wall_s"), cycles),  # per round, when the report has them
            "sweep": sweep,
        })
    return rows


def row_path(row: dict, key: str) -> str:
    """Report path of one field of a cycle strategy row (probes.cycle.data.strategies[i].key), for evidence sources."""
    return path("probes", "cycle", "data", "strategies", row["index"], key)


def cycle_device(report: dict) -> Optional[str]:
    """'cuda' or 'cpu' (what the tournament ran on), None when unknown."""
    dev = as_str(get(probe_data(report, "cycle"), "workload", "device"))
    if dev is None:
        return None
    return "cuda" if dev.lower().startswith("cuda") else dev.lower()


def gpu_questions_answered(report: dict) -> bool:
    """True when a GPU was actually exercised: the cycle ran on CUDA or a CUDA probe measured."""
    return cycle_device(report) == "cuda" or any(probe_result(report, p).get("status") == "ok" for p in CUDA_PROBES)


def strategy_reason(report: dict, name: str) -> str:
    """"name status: reason" of a cycle strategy row, or that there is none: why a strategy is not the recommendation."""
    for r in strategy_rows(report):
        if r["name"] == name:
            return f"{name} {r['status']}" + (f": {r['reason']}" if r["reason"] else "")
    return f"no {name} row in the cycle probe"


def split_path(p: str) -> List[Any]:
    """Inverse of path(): 'a.b[2].c' -> ['a', 'b', 2, 'c']."""
    keys: List[Any] = []
    for part in p.split("."):
        name, _, rest = part.partition("[")
        if name:
            keys.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            keys.append(int(idx))
            rest = rest.removeprefix("[")
    return keys
