"""The report: its JSON contract (schema_version), assembly from probe results, and safe load/save.

Views (HTML, Markdown, terminal) are rendered from this JSON alone, so `gpudiag render` and
`gpudiag report` share one path.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import secrets
import sys
from typing import Any, Dict, List, Optional

from gpudiag._version import __version__
from gpudiag.units import fmt_bytes

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "failed")
MODES = ("quick", "full", "watch")  # watch: a `gpudiag watch` report
SEVERITIES = ("info", "warning", "critical")


# The per-probe time limit a report run accepts (api.run_report, `gpudiag report --timeout`): under a second
# no probe can start its child (a spawn alone takes longer), and over a week is a typo.
MIN_TIMEOUT_S = 1.0
MAX_TIMEOUT_S = 7 * 24 * 3600.0


def check_timeout(timeout_s: Any) -> Optional[float]:
    """The per-probe limit as a float, None for each probe's own default; ValueError (one line) for anything but a
    finite number of seconds from MIN_TIMEOUT_S to MAX_TIMEOUT_S (nan, inf, 0, a bool or a string)."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise ValueError(f"timeout must be a number of seconds, not {timeout_s!r}")
    if not math.isfinite(timeout_s) or not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be a finite number of seconds from {MIN_TIMEOUT_S:g} to {MAX_TIMEOUT_S:g} "
                         f"(a week), not {timeout_s!r}")
    return float(timeout_s)


class ReportError(Exception):
    """A report file that cannot be used; the message is one line for the user."""


def utc_now_iso() -> str:
    """The current UTC time to the second as ISO 8601 with "Z" ("2025-01-31T12:00:00Z"): the report's created_at."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_basename(created_at: Optional[str] = None) -> str:
    """gpudiag-report-<date>-<short-id>: the date says when, the id keeps two runs a day apart."""
    date = (created_at or utc_now_iso())[:10]
    return f"gpudiag-report-{date}-{secrets.token_hex(3)}"


def summarize_host(probes: Dict[str, dict]) -> Dict[str, Any]:
    """The machine in a few fields, from `system` and `driver` data; missing facts stay None."""
    sysd = (probes.get("system") or {}).get("data") or {}
    drv = (probes.get("driver") or {}).get("data") or {}
    os_ = sysd.get("os") or {}
    py = sysd.get("python") or {}
    cpu = sysd.get("cpu") or {}
    mem = sysd.get("memory") or {}
    torch = sysd.get("torch") or {}
    gpus = drv.get("gpus") or []
    models = sorted({(g.get("driver_model") or {}).get("current") for g in gpus} - {None})
    return {
        "os": os_.get("pretty") or os_.get("name"),
        "kernel": os_.get("kernel"),
        "wsl": os_.get("wsl"),
        "container": os_.get("container"),
        "python": " ".join(x for x in (py.get("implementation"), py.get("version")) if x) or None,
        "gil": py.get("gil_enabled"),
        "cpu": cpu.get("brand"),
        "physical_cores": cpu.get("physical_cores"),
        "logical_cores": cpu.get("logical_cores"),
        "ram_total_bytes": mem.get("total_bytes"),
        "torch": torch.get("version"),
        "torch_cuda": torch.get("cuda_build"),
        "driver_version": drv.get("driver_version"),
        "driver_model": ", ".join(models) if models else None,
        "kernel_module": (drv.get("kernel_module") or {}).get("flavour"),
        "gpus": [
            " ".join(x for x in (g.get("name"), f"({fmt_bytes(g.get('memory_total_bytes'))})"
                                 if g.get("memory_total_bytes") else None) if x)
            for g in gpus
        ],
    }


def build_report(results: Dict[str, dict], mode: str, created_at: Optional[str] = None,
                 interrupted: bool = False, redacted: bool = True,
                 recommendation: Optional[dict] = None) -> Dict[str, Any]:
    """The report dict (schema version, gpudiag version, created_at, mode, host summary, probe results, recommendation): the one contract every view and tool reads."""
    report = {
        "schema_version": SCHEMA_VERSION,
        "gpudiag_version": __version__,
        "created_at": created_at or utc_now_iso(),
        "mode": mode,
        "redacted": redacted,
        "interrupted": interrupted,
        "host": summarize_host(results),
        "probes": results,
        "recommendation": recommendation,
    }
    return report


def all_findings(report: Dict[str, Any]):
    """Every finding with the probe it came from, most severe first."""
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    out = []
    for name, res in (report.get("probes") or {}).items():
        for f in res.get("findings") or []:
            out.append(dict(f, probe=name))
    return sorted(out, key=lambda f: order.get(f.get("severity"), 99))


# ---------------------------------------------------------------- saving and loading

# A list longer than this is written one item per line (compact), not indented item by item: a fleet's
# ranks, collectives and outliers (10,000 ranks: a third of the size, written by the C encoder).
LONG_LIST = 100


def dumps(report: Dict[str, Any]) -> str:
    """The report as indented JSON text, the items of a long list (over LONG_LIST) one per line; NaN or inf
    raise (allow_nan=False) since JSON has no such value, odd types become str."""
    token = "\x00" + secrets.token_hex(4) + ":"
    long_lists: List[list] = []

    def shrink(x: Any) -> Any:
        """x with every long list replaced by a placeholder string naming it."""
        if isinstance(x, dict):
            return {k: shrink(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            if len(x) > LONG_LIST:
                long_lists.append(list(x))
                return f"{token}{len(long_lists) - 1}"
            return [shrink(v) for v in x]
        return x

    text = json.dumps(shrink(report), indent=2, sort_keys=False, allow_nan=False, default=str)
    if not long_lists:
        return text + "\n"
    placeholder = re.compile(r'^( *)(.*)"' + re.escape(json.dumps(token)[1:-1]) + r'(\d+)"', re.M)

    def expand(m: "re.Match[str]") -> str:
        indent = m.group(1)
        items = ",\n".join(indent + "  " + json.dumps(v, allow_nan=False, default=str)
                           for v in long_lists[int(m.group(3))])
        return f"{indent}{m.group(2)}[\n{items}\n{indent}]"

    return placeholder.sub(expand, text) + "\n"


def validate(report: Any) -> None:
    """Check the parts every view relies on; raise ReportError with one line naming the problem."""
    if not isinstance(report, dict):
        raise ReportError(f"top level is {type(report).__name__}, expected a JSON object")
    if "schema_version" not in report:
        raise ReportError("no schema_version: not a gpudiag report")
    version = report["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReportError(f"schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise ReportError(f"written by a newer gpudiag (schema {version}; this gpudiag {__version__} "
                          f"reads up to {SCHEMA_VERSION}): upgrade with `pip install -U gpudiag`")
    for key, kind in (("gpudiag_version", str), ("created_at", str), ("mode", str),
                      ("host", dict), ("probes", dict)):
        if not isinstance(report.get(key), kind):
            raise ReportError(f"field {key!r} is missing or not a {kind.__name__}")
    if report["mode"] not in MODES:
        raise ReportError(f"mode {report['mode']!r} is not one of {', '.join(MODES)}")
    for name, res in report["probes"].items():
        if not isinstance(res, dict):
            raise ReportError(f"probe {name!r} is not an object")
        if res.get("status") not in STATUSES:
            raise ReportError(f"probe {name!r} has status {res.get('status')!r}, "
                              f"expected one of {', '.join(STATUSES)}")
        if not isinstance(res.get("findings", []), list):
            raise ReportError(f"probe {name!r} findings is not a list")
        for f in res.get("findings", []):
            if not isinstance(f, dict) or not isinstance(f.get("code"), str) \
                    or f.get("severity") not in SEVERITIES:
                raise ReportError(f"probe {name!r} has a malformed finding")
    rec = report.get("recommendation")
    if rec is not None and not isinstance(rec, dict):
        raise ReportError("recommendation is neither null nor an object")


MAX_REPORT_BYTES = 64 * 2**20   # real reports are well under 1 MiB
# A fleet report grows with its ranks, about 3.8 KB a GPU rank with its share of nodes and collectives
# (benchmarks/fleet_scale.py): 100,000 ranks are some 370 MiB. It is told from other reports by its head (HEAD_BYTES), before the rest is read.
MAX_FLEET_REPORT_BYTES = 2**30
HEAD_BYTES = 64 * 2**10
_FLEET_HEAD = re.compile(rb'"probes"\s*:\s*\{\s*"fleet"\s*:')
MAX_DEPTH = 64                  # real reports nest about 8 levels
MAX_INT_DIGITS = 30             # byte counts and nanoseconds fit in 20 digits


def _parse_int(text: str) -> int:
    """An int from JSON text, refusing over 30 digits with ReportError: a huge number would stall int() and no report holds one."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ReportError(f"holds a number with {len(text.lstrip('-'))} digits; no gpudiag report does")
    return int(text)


def _parse_constant(text: str) -> float:
    """Always raises ReportError: NaN and Infinity are not JSON, and gpudiag writes null for a missing number."""
    raise ReportError(f"holds {text}, which is not valid JSON (gpudiag writes null for a missing number)")


_INT_LIMIT = 10 ** MAX_INT_DIGITS
# Python 3.11+ refuses to convert an integer of over 4,300 digits (a ValueError, at once); before 3.11 a
# huge one would stall int(), so there every integer is checked as it is read.
_INT_HOOK_NEEDED = not hasattr(sys, "get_int_max_str_digits")


def _check_values(data: Any) -> None:
    """Refuse data nested deeper than any report (every view and the redactor walk it recursively: a value at
    a depth over MAX_DEPTH, the top at depth 1), an integer of more than MAX_INT_DIGITS digits, and a float
    that overflowed to infinity. One walk over the containers (json.loads reads a fleet report's millions of
    numbers in C; a hook per number would double the time)."""
    if not isinstance(data, (dict, list)):
        return
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        if depth >= MAX_DEPTH and children:
            raise ReportError(f"nested more than {MAX_DEPTH} levels deep: not a gpudiag report")
        for v in children:
            t = type(v)
            if t is dict or t is list:
                stack.append((v, depth + 1))
            elif t is float:
                if v - v != 0.0:  # inf (NaN never gets here: _parse_constant refuses it)
                    raise ReportError("holds a number too large to be a measurement (it overflows to infinity)")
            elif t is int and not -_INT_LIMIT < v < _INT_LIMIT:
                raise ReportError(f"holds a number with {len(str(abs(v)))} digits; no gpudiag report does")


def size_limit(head: bytes) -> int:
    """The most bytes a report may have, from its first HEAD_BYTES: MAX_FLEET_REPORT_BYTES for a fleet report
    (whose "probes" block opens with "fleet", after the small header gpudiag writes first), else MAX_REPORT_BYTES."""
    return MAX_FLEET_REPORT_BYTES if _FLEET_HEAD.search(head[:HEAD_BYTES]) else MAX_REPORT_BYTES


def _too_large(name: str, size: int, limit: int = MAX_REPORT_BYTES) -> ReportError:
    """The error for `size` bytes over `limit`, sizes in units.fmt_bytes's words; "a file over 64 MiB" where the
    size is within 5 % of the limit (rounded, it could read as the limit itself) or only known to be over it
    (load_report reads one byte past the limit and stops)."""
    limit_text = fmt_bytes(limit)
    what = fmt_bytes(size) if size >= limit * 1.05 else f"a file over {limit_text}"
    kind = "gpudiag fleet report" if limit == MAX_FLEET_REPORT_BYTES else "gpudiag report"
    return ReportError(f"{name}: {what} is too large to be a {kind} (at most {limit_text})")


def parse_report(raw: bytes, name: str) -> Dict[str, Any]:
    """Decode and check report bytes; any problem is a ReportError naming `name`."""
    limit = size_limit(raw) if len(raw) > MAX_REPORT_BYTES else MAX_REPORT_BYTES
    if len(raw) > limit:
        raise _too_large(name, len(raw), limit)
    if not raw.strip():
        raise ReportError(f"{name}: file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReportError(f"{name}: not a text file (not UTF-8)") from None
    try:
        hooks = {"parse_int": _parse_int} if _INT_HOOK_NEEDED else {}
        data = json.loads(text, parse_constant=_parse_constant, **hooks)
    except ReportError as exc:
        raise ReportError(f"{name}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                          "truncated or not a gpudiag report?") from None
    except RecursionError:
        raise ReportError(f"{name}: nested too deeply to be a gpudiag report") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise ReportError(f"{name}: not a usable JSON report ({str(exc)[:80]})") from None
    try:
        _check_values(data)
        validate(data)
    except ReportError as exc:
        raise ReportError(f"{name}: {exc}") from None
    return data


def load_report(path: str) -> Dict[str, Any]:
    """Read and check a saved report; any problem is a ReportError naming the file."""
    name = os.path.basename(path) or path
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size  # 0 for a pipe: then the read below stops past the limit
            head = fh.read(HEAD_BYTES) if size > MAX_REPORT_BYTES or size == 0 else b""
            limit = size_limit(head) if head else MAX_REPORT_BYTES
            if size > limit:
                raise _too_large(name, size, limit)
            raw = head + fh.read(limit + 1 - len(head))
    except FileNotFoundError:
        raise ReportError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{name}: is a folder, not a report file") from None
    except OSError as exc:
        raise ReportError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # an embedded NUL in the path
        raise ReportError(f"{name!r}: not a usable path ({exc})") from None
    return parse_report(raw, name)
