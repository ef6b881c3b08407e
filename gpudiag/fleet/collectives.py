"""Collectives sweep: all_reduce, all_gather and reduce_scatter over a size sweep, per scope.

Bandwidths follow nccl-tests (doc/PERFORMANCE.md; src/all_gather.cu, reduce_scatter.cu):
S is the bytes of the whole operation (the all_reduce buffer; the gathered output of all_gather;
the scattered input of reduce_scatter), algbw = S / t, and busbw = algbw x factor with factor
2(n-1)/n for all_reduce and (n-1)/n for all_gather and reduce_scatter, so that busbw is
comparable with the hardware's link speed whatever the rank count.

Scopes, like NCCL_TESTS_SPLIT: `world` (every rank), `intra_node` (the ranks of each node
at once, one group per node) and `inter_node` (the first rank of every node); one node gives only
`intra_node`, one rank per node only `inter_node` (then the same ranks as the world). Each rank times `repeats` loops of `iters` operations; the
time of one repeat is the slowest rank's, since the operation is done only when every rank is.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

from gpudiag.measure.stats import summarize

OPS = ("all_reduce", "all_gather", "reduce_scatter")
MiB = 2 ** 20
ELEMENT_BYTES = 4  # float32, nccl-tests' default type


def busbw_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor for `op` on n ranks."""
    if n < 1:
        raise ValueError(f"rank count must be >= 1, not {n}")
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    raise ValueError(f"unknown collective {op!r}; known: {', '.join(OPS)}")


def bandwidths(op: str, size_bytes: float, seconds: float, n: int) -> Dict[str, Optional[float]]:
    """{algbw_gbps, busbw_gbps} for one operation of S = size_bytes taking `seconds` on n ranks (GB = 1e9 B)."""
    if not seconds or seconds <= 0:
        return {"algbw_gbps": None, "busbw_gbps": None}
    algbw = size_bytes / seconds / 1e9
    return {"algbw_gbps": algbw, "busbw_gbps": algbw * busbw_factor(op, n)}


def plan(device: str, quick: bool) -> Dict[str, Any]:
    """Sizes (bytes of S) and loop counts: small enough for a first look, large enough to plateau."""
    if device == "cuda":
        sizes = [MiB, 16 * MiB, 256 * MiB] if quick else [2 ** k for k in range(16, 31, 2)]
        return {"sizes": sizes, "warmup": 2 if quick else 5, "iters": 10 if quick else 20, "repeats": 5 if quick else 10}
    # gloo on CPU: the same code path, scaled to what host memory copies do in a second.
    sizes = [64 * 1024, MiB, 8 * MiB] if quick else [2 ** k for k in range(14, 27, 2)]
    return {"sizes": sizes, "warmup": 1, "iters": 3 if quick else 5, "repeats": 5 if quick else 9}


def element_count(op: str, size_bytes: int, n: int) -> int:
    """Elements of each rank's input: the buffer for all_reduce, S / n for all_gather, S for reduce_scatter.

    all_gather and reduce_scatter split S into n equal parts, so S is rounded down to a multiple of n
    elements; `op_bytes` gives the S actually moved.
    """
    elems = max(size_bytes // ELEMENT_BYTES, n)
    if op == "all_reduce":
        return elems
    elems -= elems % n
    return elems // n if op == "all_gather" else elems


def op_bytes(op: str, size_bytes: int, n: int) -> int:
    """S of the operation element_count() sets up (what algbw divides)."""
    elems = element_count(op, size_bytes, n)
    return (elems * n if op == "all_gather" else elems) * ELEMENT_BYTES


def _op_runner(torch, dist, op: str, size_bytes: int, n: int, device: str, group: Any):
    """A no-argument function doing one `op` of S = op_bytes(op, size_bytes, n) on this rank's buffers."""
    elems = element_count(op, size_bytes, n)
    x = torch.ones(elems, dtype=torch.float32, device=device)
    if op == "all_reduce":
        return lambda: dist.all_reduce(x, group=group)
    # torch 2.13 renamed the single-tensor forms (*_into_tensor / *_tensor -> *_single); older torch has the old names.
    if op == "all_gather":
        out = torch.empty(elems * n, dtype=torch.float32, device=device)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: gather(out, x, group=group)
    out = torch.empty(elems // n, dtype=torch.float32, device=device)
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return lambda: scatter(out, x, group=group)


def time_op(torch, dist, op: str, size_bytes: int, n: int, device: str, group: Any,
            p: Dict[str, Any]) -> List[float]:
    """Per-operation seconds of each repeat on this rank (a loop of iters, then a device sync)."""
    run = _op_runner(torch, dist, op, size_bytes, n, device, group)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(p["warmup"]):
        run()
    sync()
    out = []
    for _ in range(p["repeats"]):
        t0 = time.perf_counter()
        for _ in range(p["iters"]):
            run()
        sync()
        out.append((time.perf_counter() - t0) / p["iters"])
    return out


def aggregate(op: str, scope: str, size_bytes: int, group_ranks: Sequence[int],
              per_rank: Dict[int, List[float]], host: Optional[str] = None) -> Dict[str, Any]:
    """One data.collectives row from each member's per-repeat seconds (slowest rank per repeat)."""
    n = len(group_ranks)
    series = [per_rank[r] for r in group_ranks if per_rank.get(r)]
    row: Dict[str, Any] = {"op": op, "scope": scope, "host": host, "ranks": list(group_ranks), "n_ranks": n,
                           "size_bytes": int(size_bytes)}
    if len(series) < n:
        row.update(time_us=None, algbw_gbps=None, busbw_gbps=None,
                   reason=f"{n - len(series)} of {n} ranks sent no timing")
        return row
    repeats = min(len(s) for s in series)
    slowest = [max(s[i] for s in series) for i in range(repeats)]
    st = summarize(slowest)
    bw = bandwidths(op, size_bytes, st["median"], n)
    lo = bandwidths(op, size_bytes, st["p90"], n)  # the slow tail of time is the low end of bandwidth
    hi = bandwidths(op, size_bytes, st["p10"], n)
    row.update(time_us={k: round(v * 1e6, 2) if isinstance(v, float) else v for k, v in st.items()
                        if k in ("n", "median", "p10", "p90")},
               algbw_gbps=_r(bw["algbw_gbps"]), busbw_gbps=_r(bw["busbw_gbps"]),
               busbw_gbps_p10=_r(lo["busbw_gbps"]), busbw_gbps_p90=_r(hi["busbw_gbps"]),
               busbw_factor=round(busbw_factor(op, n), 4))
    return row


def _r(x: Optional[float]) -> Optional[float]:
    """Five significant digits: enough for any bandwidth, from gloo's 0.02 GB/s to NVLink's 400."""
    return None if x is None else float(f"{x:.5g}")


def scopes(nodes: Dict[str, List[int]]) -> List[Dict[str, Any]]:
    """The groups to measure: [{scope, groups: [(host, ranks)]}], every group of one scope run at once."""
    all_ranks = sorted(r for ranks in nodes.values() for r in ranks)
    if len(nodes) <= 1:
        only = next(iter(nodes), None)
        return [{"scope": "intra_node", "groups": [(only, all_ranks)]}] if len(all_ranks) > 1 else []
    if all(len(ranks) == 1 for ranks in nodes.values()):  # one rank per node: the world is the inter-node group
        return [{"scope": "inter_node", "groups": [(None, all_ranks)]}]
    out = [{"scope": "world", "groups": [(None, all_ranks)]}]
    intra = [(host, sorted(ranks)) for host, ranks in sorted(nodes.items(), key=lambda kv: min(kv[1]))
             if len(ranks) > 1]
    if intra:
        out.append({"scope": "intra_node", "groups": intra})
    out.append({"scope": "inter_node", "groups": [(None, sorted(min(r) for r in nodes.values()))]})
    return out


def run_sweep(torch, dist, transport_groups, layout: List[Dict[str, Any]], rank: int, device: str,
              p: Dict[str, Any], ops: Sequence[str] = OPS) -> Dict[str, Any]:
    """This rank's timings: {"timings": [{scope, group, op, size_bytes, seconds: [...]}], "error": str|None}.

    Every rank walks the same steps in the same order; a world barrier (gloo) between steps keeps
    the scopes from overlapping. Groups are made up front, as torch.distributed requires.
    """
    made = []
    for step in layout:
        groups = []
        for host, ranks in step["groups"]:
            # None: the whole world, the default group; otherwise a subgroup every rank creates.
            whole = len(ranks) == transport_groups.world_size
            groups.append((host, ranks, None if whole else transport_groups.new_group(ranks)))
        made.append((step["scope"], groups))
    timings: List[Dict[str, Any]] = []
    try:
        for scope, groups in made:
            mine = next(((host, ranks, g) for host, ranks, g in groups if rank in ranks), None)
            for op in ops:
                for size in p["sizes"]:
                    transport_groups.barrier_all()
                    if mine is None:
                        continue
                    host, ranks, group = mine
                    seconds = time_op(torch, dist, op, size, len(ranks), device, group, p)
                    timings.append({"scope": scope, "host": host, "ranks": ranks, "op": op,
                                    "size_bytes": op_bytes(op, size, len(ranks)), "seconds": seconds})
        transport_groups.barrier_all()
    except RuntimeError as exc:  # a rank died or hung mid-sweep: keep what was measured
        from gpudiag.fleet.transport import first_line

        return {"timings": timings, "error": first_line(exc)}
    return {"timings": timings, "error": None}


def combine(per_rank: Dict[int, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """data.collectives rows from every rank's run_sweep() result."""
    steps: Dict[tuple, Dict[str, Any]] = {}
    for r, res in sorted(per_rank.items()):
        for t in (res or {}).get("timings") or []:
            key = (t["scope"], t.get("host"), tuple(t["ranks"]), t["op"], t["size_bytes"])
            steps.setdefault(key, {})[r] = t["seconds"]
    rows = [aggregate(op, scope, size, list(ranks), timings, host)
            for (scope, host, ranks, op, size), timings in steps.items()]
    order = {s: i for i, s in enumerate(("world", "intra_node", "inter_node"))}
    rows.sort(key=lambda x: (order.get(x["scope"], 9), str(x.get("host")), OPS.index(x["op"]), x["size_bytes"]))
    return rows
