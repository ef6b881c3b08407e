"""Checks on the host: CPU limit, RAM (cgroup and WSL limits included), swap, OOM kills, environment hygiene, disk."""

from __future__ import annotations

from typing import Any, List, Mapping, Tuple

from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.preflight.model import Check, Plan, num, worst
from gpudiag.diagnose.preflight.needs import fit_status, host_budget, need_text
from gpudiag.diagnose.thresholds import SWAP_USED_SHARE_MAX, SWAPLESS_NEED_SHARE_MAX
from gpudiag.units import fmt_bytes, fmt_pct


def check_cpu_limit(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`cpu_limit`: warn when more workers are planned than the usable cores (the least of the CPU affinity, the
    cpuset and a CPU quota such as docker --cpus or a Kubernetes CPU limit), naming the limit by kind; pass
    otherwise. A warning, not a failure: the run still works, and workers that mostly wait (on the GPU, on
    input) can outnumber the cores; CPU-bound ones beyond the limit only take turns inside it."""
    limit = facts.get("cpu_limit")
    if not isinstance(limit, dict) or not num(limit.get("usable_cores")):
        return Check("cpu_limit", "skip", f"usable cores unknown ({facts.get('cpu_limit_reason') or 'no facts'})")
    usable = int(limit["usable_cores"])
    ev = {k: limit.get(k) for k in ("usable_cores", "usable_cpus", "limited_by", "quota_cpus", "quota_period_us",
                                    "quota_source", "cgroup_version", "cpuset_cpus", "affinity_cores")}
    ev.update(workers=plan.workers, logical_cpus=facts.get("logical_cpus"))
    where = f"under {cpu_limit.limit_text(limit)}" if cpu_limit.limit_text(limit) else "(no CPU limit)"
    cores = f"{usable} usable core{'s' if usable != 1 else ''}"
    nouns = ("thread", "threads") if plan.strategy == "threads" else ("worker process", "worker processes")
    kind = nouns[plan.workers != 1]
    if plan.workers > usable:
        raise_it = (" or raise the limit (docker --cpus, Kubernetes resources.limits.cpu, systemd CPUQuota)"
                    if cpu_limit.quota_binds(limit) else "")
        return Check("cpu_limit", "warn", f"{plan.workers} {kind} on {cores} {where}: CPU-bound workers beyond "
                     f"{usable} take turns" + (" inside the quota (throttled)" if cpu_limit.quota_binds(limit) else "")
                     + f" and add no speed; use --workers {usable}{raise_it}, unless they mostly wait on the GPU "
                     "or on input", ev)
    return Check("cpu_limit", "pass", f"{plan.workers} {kind} within {cores} {where}", ev)


def check_host_ram(facts: Mapping[str, Any], plan: Plan, need: Mapping[str, Any]) -> Check:
    """`host_ram`: the workers' RAM need against what new processes may use (available RAM, or the cgroup
    limit's room, WSL2's cap noted): fail if it does not fit (the OOM killer), warn above 90 %."""
    mem = facts.get("memory") or {}
    budget, what = host_budget(mem)
    ev = {k: mem.get(k) for k in ("available_bytes", "total_bytes", "cgroup_limit_bytes", "cgroup_usage_bytes",
                                  "wsl_memory_cap_bytes", "budget_bytes")}
    ev.update({"budget_bytes": budget, "need_bytes": need["total_host_bytes"],
               "per_worker_bytes": need["host_bytes"], "source": need["host_source"]})
    if budget is None:
        return Check("host_ram", "skip", f"available memory unknown ({facts.get('memory_reason') or 'no facts'})", ev)
    status = fit_status(need["total_host_bytes"], budget)
    verdict = {"fail": "does not fit in", "warn": "barely fits in", "pass": "fits in"}[status]
    msg = f"{need_text(need, plan, 'host')} {verdict} {fmt_bytes(budget)} ({what})"
    cap = num(mem.get("wsl_memory_cap_bytes"))
    if cap:
        msg += f"; WSL2 caps this Linux at {fmt_bytes(cap)} (.wslconfig memory=)"
    if status == "fail":
        msg += " - expect the OOM killer"
    return Check("host_ram", status, msg, ev)


def check_swap(facts: Mapping[str, Any], plan: Plan, need: Mapping[str, Any]) -> Check:
    """`swap`: warn when swap is over half used before the run, or absent while the workers need over 3/4
    of the memory left (going over then means the OOM killer, not a slowdown); pass otherwise."""
    mem = facts.get("memory") or {}
    total, used = num(mem.get("swap_total_bytes")), num(mem.get("swap_used_bytes"))
    ev = {"swap_total_bytes": total, "swap_used_bytes": used}
    if total is None:
        return Check("swap", "skip", "swap size unknown", ev)
    budget, _ = host_budget(mem)
    if total == 0:
        if budget and need["total_host_bytes"] > SWAPLESS_NEED_SHARE_MAX * budget:
            return Check("swap", "warn", "no swap, and the workers need over 3/4 of the memory left: going over "
                         "means the OOM killer, not a slowdown", ev)
        return Check("swap", "pass", "no swap (fine while the workers fit with room to spare)", ev)
    if used is not None and used > SWAP_USED_SHARE_MAX * total:
        return Check("swap", "warn", f"swap is already {fmt_pct(used / total)} used ({fmt_bytes(used)} of "
                     f"{fmt_bytes(total)}): this machine is short of RAM before the run starts", ev)
    return Check("swap", "pass", f"{fmt_bytes(total)} swap" + (f", {fmt_bytes(used)} used" if used else ""), ev)


def check_oom_kills(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`oom_kills`: warn when the OOM killer has already struck since boot or in this cgroup (memory ran out
    here before); skip where there is no counter (not Linux)."""
    mem = facts.get("memory") or {}
    kills, cg_kills = num(mem.get("oom_kills_since_boot")), num(mem.get("cgroup_oom_kills"))
    ev = {"oom_kills_since_boot": kills, "cgroup_oom_kills": cg_kills}
    if kills is None and cg_kills is None:
        return Check("oom_kills", "skip", "no OOM-kill counter here (Linux /proc/vmstat)", ev)
    parts = []
    if kills:
        parts.append(f"the OOM killer has killed {int(kills)} process{'es' if kills != 1 else ''} since boot")
    if cg_kills:
        parts.append(f"{int(cg_kills)} in this cgroup")
    if parts:
        return Check("oom_kills", "warn", "; ".join(parts) + ": memory has already run out on this machine "
                     "(`journalctl -k | grep -i oom` shows which)", ev)
    return Check("oom_kills", "pass", "no OOM kills since boot", ev)


def check_environment(facts: Mapping[str, Any], plan: Plan) -> Check:
    """Settings left over from debugging that make a long run slower or fragile.

    CUDA_LAUNCH_BLOCKING=1 fails: it makes every launch synchronous (a debugging switch) and is never
    what a long production run wants. The rest warn: they may be deliberate.
    """
    env = facts.get("env") or {}
    items: List[Tuple[str, str]] = []
    blocking = env.get("CUDA_LAUNCH_BLOCKING")
    if blocking is not None and blocking.strip() not in ("", "0"):
        items.append(("fail", f"CUDA_LAUNCH_BLOCKING={blocking} makes every kernel launch synchronous (a "
                              "debugging switch that leaves the GPU idle between launches): unset it"))
    if (env.get("PYTORCH_NO_CUDA_MEMORY_CACHING") or "").strip() not in ("", "0"):
        items.append(("warn", "PYTORCH_NO_CUDA_MEMORY_CACHING disables torch's caching allocator: every "
                              "allocation goes to cudaMalloc (slow); unset it"))
    if (env.get("CUDA_MODULE_LOADING") or "").strip().upper() == "EAGER":
        items.append(("warn", "CUDA_MODULE_LOADING=EAGER loads every kernel into each CUDA context (hundreds of "
                              "MB more per process than LAZY)"))
    method, source = facts.get("start_method"), facts.get("start_method_source")
    if plan.strategy == "processes" and plan.workers > 1 and method == "fork":
        items.append(("warn", f"the multiprocessing start method is fork ({source}): CUDA does not work in "
                              "forked children; use multiprocessing.get_context('spawn')"))
    ev = {"env": {k: env.get(k) for k in ("CUDA_LAUNCH_BLOCKING", "PYTORCH_NO_CUDA_MEMORY_CACHING",
                                          "CUDA_MODULE_LOADING")},
          "start_method": method, "start_method_source": source,
          "problems": [{"status": s, "message": m} for s, m in items]}
    if not items:
        return Check("environment", "pass", f"no debug switches set; start method {method}", ev)
    items.sort(key=lambda i: i[0] != "fail")
    return Check("environment", worst(s for s, _ in items), "; ".join(m for _, m in items), ev)


def check_disk(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`disk`: fail when --checkpoint-dir is not writable or has less than --min-free-disk free; skip
    without --checkpoint-dir, so a long run does not die at its first checkpoint."""
    disk = facts.get("disk")
    if not plan.checkpoint_dir or not isinstance(disk, dict):
        return Check("disk", "skip", "no --checkpoint-dir given")
    free, path = num(disk.get("free_bytes")), disk.get("path")
    ev = {"path": path, "free_bytes": free, "total_bytes": disk.get("total_bytes"),
          "writable": disk.get("writable"), "min_free_bytes": plan.min_free_disk}
    if disk.get("writable") is False:
        return Check("disk", "fail", f"{path} is not writable: checkpoints cannot be saved there", ev)
    if free is None:
        return Check("disk", "skip", f"free space at {path} unknown ({disk.get('reason')})", ev)
    if plan.min_free_disk is not None and free < plan.min_free_disk:
        return Check("disk", "fail", f"{fmt_bytes(free)} free at {path}, less than the "
                     f"{fmt_bytes(plan.min_free_disk)} asked for (--min-free-disk)", ev)
    return Check("disk", "pass", f"{fmt_bytes(free)} free at {path}"
                 + (f" (>= {fmt_bytes(plan.min_free_disk)})" if plan.min_free_disk is not None
                    else " (no --min-free-disk given)"), ev)
