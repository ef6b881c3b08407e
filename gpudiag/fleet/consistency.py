"""Consistency across ranks: what should be alike on every rank of one job, as findings.

Versions (gpudiag, Python, torch and its CUDA, NCCL, driver, CUDA driver API), the device kind and
GPU model, persistence mode, the PCIe link (best possible and read under load), clocks and
throttling, ECC errors, other processes on a rank's GPU, two ranks on one GPU, and preflight
verdicts. A value held by a minority names those ranks; one held by everyone is not news.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from gpudiag.probes.base import finding
from gpudiag.report.values import as_dict

NA = "n/a"


def where(entry: Mapping[str, Any]) -> str:
    """"rank 3 (host-ab12cd34, GPU 1, uuid 9f8e7d6c)": how a finding names a rank."""
    dev = as_dict(entry.get("device"))
    parts = [str(entry.get("host") or "unknown host")]
    if dev.get("kind") == "cuda":
        parts.append(f"GPU {dev.get('index')}")
        if dev.get("gpu_uuid_hash"):
            parts.append(f"uuid {dev['gpu_uuid_hash']}")
    elif dev.get("kind") == "cpu":
        parts.append("CPU rank")
    return f"rank {entry.get('rank')} ({', '.join(parts)})"


_where = where


def _names(entries: Sequence[Mapping[str, Any]], limit: int = 6) -> str:
    """Up to `limit` ranks as findings name them, then "and N more": one readable line on a
    large fleet."""
    text = ", ".join(_where(e) for e in entries[:limit])
    return text + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def split_by(ranks: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], Any]) -> Dict[str, List[int]]:
    """{value: [ranks]} of a field, leaving out ranks that do not know it (None, n/a)."""
    out: Dict[str, List[int]] = defaultdict(list)
    for e in ranks:
        v = get(e)
        if v is None or v == NA:
            continue
        out[str(v)].append(e["rank"])
    return dict(out)


def _minority(split: Mapping[str, List[int]]) -> List[int]:
    """Ranks outside the most common value (ties: outside the value of the lowest rank)."""
    if len(split) < 2:
        return []
    common = max(split.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))[0]
    return sorted(r for v, rs in split.items() if v != common for r in rs)


VERSION_FIELDS = (
    ("gpudiag", lambda e: as_dict(e.get("versions")).get("gpudiag")),
    ("python", lambda e: as_dict(e.get("versions")).get("python")),
    ("torch", lambda e: as_dict(e.get("versions")).get("torch")),
    ("torch CUDA", lambda e: as_dict(e.get("versions")).get("torch_cuda")),
    ("NCCL", lambda e: as_dict(e.get("versions")).get("nccl")),
    ("driver", lambda e: as_dict(e.get("driver")).get("driver_version")),
    ("CUDA driver API", lambda e: as_dict(e.get("driver")).get("cuda_driver_version")),
)


def _gpu(e: Mapping[str, Any]) -> bool:
    """True for a rank that measured on a CUDA device: GPU checks leave CPU ranks out."""
    return as_dict(e.get("device")).get("kind") == "cuda"


def _link(e: Mapping[str, Any], key: str) -> Any:
    """The link generation or width read under load, else NVML's current reading (idle links downtrain)."""
    load = as_dict(as_dict(as_dict(e.get("figures")).get("h2d_gbps")).get("link_under_load"))
    if load.get(key) is not None:
        return load[key]
    return as_dict(as_dict(e.get("driver")).get("pcie")).get({"gen": "gen_current", "width": "width_current"}[key])


def consistency_findings(ranks: Sequence[Mapping[str, Any]]) -> List[dict]:
    """Skew and mismatch findings; each names the ranks that differ."""
    by_rank = {e["rank"]: e for e in ranks}
    out: List[dict] = []
    skews = {}
    for label, get in VERSION_FIELDS:
        split = split_by(ranks, get)
        if len(split) > 1:
            skews[label] = split
    if skews:
        odd = sorted({r for s in skews.values() for r in _minority(s)})
        out.append(finding("FLEET_VERSION_SKEW", "warning",
                           f"versions differ across ranks ({', '.join(skews)}): {_names([by_rank[r] for r in odd])} "
                           "differ from the rest", evidence={k: v for k, v in skews.items()},
                           fix="install the same driver, CUDA, torch and NCCL on every node (one image)"))
    kinds = split_by(ranks, lambda e: as_dict(e.get("device")).get("kind"))
    if len(kinds) > 1:
        out.append(finding("FLEET_DEVICE_MIX", "warning",
                           f"ranks run on different devices ({', '.join(f'{k}: {len(v)}' for k, v in kinds.items())}); "
                           "CPU and GPU figures are not compared with each other", evidence=kinds,
                           fix="check CUDA_VISIBLE_DEVICES and the GPU count on the CPU ranks' nodes"))
    models = split_by([e for e in ranks if _gpu(e)], lambda e: as_dict(e.get("device")).get("name"))
    if len(models) > 1:
        out.append(finding("FLEET_GPU_MODEL_MIX", "warning",
                           f"{len(models)} GPU models in one job: ranks are compared only with the same model",
                           evidence=models, fix="a synchronous job runs at the pace of its slowest GPU model"))
    out += _link_findings(ranks, by_rank)
    out += _gpu_state_findings(ranks, by_rank)
    return out


def _link_findings(ranks: Sequence[Mapping[str, Any]], by_rank: Mapping[int, Mapping[str, Any]]) -> List[dict]:
    """Findings for GPU ranks below the best PCIe generation or width seen, differing
    maximum SM clocks, and mixed persistence mode, each naming the ranks."""
    out = []
    gpus = [e for e in ranks if _gpu(e)]
    for key, label in (("gen", "generation"), ("width", "width")):
        split = split_by(gpus, lambda e, k=key: _link(e, k))
        if len(split) > 1:
            best = max(int(v) for v in split)
            slow = sorted(r for v, rs in split.items() if int(v) < best for r in rs)
            out.append(finding("FLEET_LINK_MISMATCH", "warning",
                               f"PCIe link {label} differs: {_names([by_rank[r] for r in slow])} below "
                               f"{'Gen' if key == 'gen' else 'x'}{best} (read while copying)", evidence=split,
                               fix="reseat the card or riser, check BIOS slot settings; compare "
                                   "`nvidia-smi -q -d PCIE` on the named nodes"))
    clocks = split_by(gpus, lambda e: as_dict(as_dict(e.get("driver")).get("clocks")).get("sm_max_mhz"))
    if len(clocks) > 1:
        out.append(finding("FLEET_CLOCK_MISMATCH", "warning",
                           f"maximum SM clocks differ across GPUs of one model or more: {dict(clocks)}",
                           evidence=clocks, fix="check application clocks and locked clocks (`nvidia-smi -q -d CLOCK`)"))
    persist = split_by(gpus, lambda e: as_dict(e.get("driver")).get("persistence_mode"))
    if len(persist) > 1:
        off = sorted(r for v, rs in persist.items() if v == "False" for r in rs)
        out.append(finding("FLEET_PERSISTENCE_MIXED", "warning",
                           f"persistence mode is off on {_names([by_rank[r] for r in off])} and on elsewhere",
                           evidence=persist, fix="`nvidia-smi -pm 1` (root) or enable nvidia-persistenced on every node"))
    return out


def _gpu_state_findings(ranks: Sequence[Mapping[str, Any]], by_rank: Mapping[int, Mapping[str, Any]]) -> List[dict]:
    """Findings for throttling, ECC trouble, other processes on a rank's GPU and ranks
    sharing one GPU, each naming the ranks."""
    out = []
    gpus = [e for e in ranks if _gpu(e)]
    throttled = [e for e in gpus if as_dict(e.get("driver")).get("throttling")]
    if throttled:
        out.append(finding("FLEET_THROTTLING", "warning",
                           f"throttling (heat or power) on {_names(throttled)}",
                           evidence={e["rank"]: as_dict(e.get("driver")).get("throttling") for e in throttled},
                           fix="check cooling and power limits on the named nodes (`nvidia-smi -q -d PERFORMANCE`)"))
    ecc = [e for e in gpus if _ecc_bad(as_dict(as_dict(e.get("driver")).get("ecc")))]
    if ecc:
        out.append(finding("FLEET_ECC_ERRORS", "critical",
                           f"uncorrected ECC errors or pending page retirement/row remapping on {_names(ecc)}",
                           evidence={e["rank"]: as_dict(e.get("driver")).get("ecc") for e in ecc},
                           fix="drain the node and run `dcgmi diag -r 2`; a pending remap needs a GPU reset"))
    shared = [e for e in gpus if as_dict(e.get("driver")).get("other_processes")]
    if shared:
        out.append(finding("FLEET_GPU_SHARED", "warning", f"other processes hold the GPU of {_names(shared)}",
                           evidence={e["rank"]: as_dict(e.get("driver")).get("other_processes") for e in shared},
                           fix="find them with `nvidia-smi` on the named nodes; a leftover job slows every step"))
    over = [e for e in gpus if as_dict(e.get("device")).get("shared_with_other_ranks")]
    if over:
        out.append(finding("FLEET_GPU_OVERSUBSCRIBED", "critical",
                           f"more ranks than GPUs on a node: {_names(over)} share a GPU with another rank",
                           fix="set --nproc-per-node (or --ntasks-per-node) to the node's GPU count"))
    return out


def _ecc_bad(ecc: Mapping[str, Any]) -> bool:
    """Uncorrected volatile errors, or retirement/remapping pending or failed: the GPU needs attention."""
    v = ecc.get("volatile_uncorrected")
    rows = as_dict(ecc.get("remapped_rows"))
    return (isinstance(v, int) and v > 0) or ecc.get("retired_pages_pending") is True \
        or rows.get("pending") is True or rows.get("failure") is True


def preflight_split(ranks: Sequence[Mapping[str, Any]]) -> Dict[str, List[int]]:
    """{check name: [ranks where it failed]} over the checks that apply to each rank."""
    out: Dict[str, List[int]] = defaultdict(list)
    for e in ranks:
        for c in as_dict(e.get("preflight")).get("checks") or []:
            if isinstance(c, dict) and c.get("applies", True) and c.get("status") == "fail":
                out[str(c.get("name"))].append(e["rank"])
    return dict(out)


def preflight_findings(ranks: Sequence[Mapping[str, Any]]) -> List[dict]:
    """Failed preflight checks: on some ranks (critical, those nodes go) or on all (a fleet-wide setup problem)."""
    by_rank = {e["rank"]: e for e in ranks}
    out = []
    for name, failed in sorted(preflight_split(ranks).items()):
        msgs = {r: next((c.get("message") for c in as_dict(by_rank[r].get("preflight")).get("checks") or []
                         if isinstance(c, dict) and c.get("name") == name), None) for r in failed}
        first: Optional[str] = next(iter(msgs.values()), None)
        if len(failed) == len(ranks):
            out.append(finding("FLEET_PREFLIGHT_FAIL_ALL", "warning",
                               f"preflight check {name!r} fails on every rank: {first}", evidence=msgs,
                               fix="a setup problem of the whole job (image, environment), not of one node"))
        else:
            out.append(finding("FLEET_PREFLIGHT_FAIL", "critical",
                               f"preflight check {name!r} fails on {_names([by_rank[r] for r in failed])}: {first}",
                               evidence=msgs, fix="run `gpudiag preflight` on the named nodes, or exclude them"))
    return out
