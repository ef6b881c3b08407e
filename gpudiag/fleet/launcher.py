"""Where this process sits in the job: rank, world size, local rank, node, rendezvous address.

Read from the launcher's environment only, never guessed: torchrun first (it may itself run
inside a Slurm step, one torchrun per node), then a Slurm job step (`srun`), then plain
RANK/WORLD_SIZE (mpirun wrappers, hand-made launches), else a world of one. Pure functions of an
environ mapping, so every launcher is testable without one. Sources: torch/distributed/run.py
docstring (torchrun's variables), https://slurm.schedmd.com/srun.html (output environment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

# A port every task of one Slurm job derives alike when MASTER_PORT is not set: in the
# unprivileged range, away from torchrun's defaults (29400 rendezvous, 29500 master).
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 9000


class LaunchError(ValueError):
    """The launcher's variables are inconsistent or unreadable; the message is one line."""


@dataclass(frozen=True)
class Place:
    """This process's place in the job, and how it was found."""

    launcher: str  # "torchrun" | "slurm" | "env" | "none"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: Optional[int]
    node_rank: Optional[int]  # the launcher's node index, when it gives one
    master_addr: Optional[str]
    master_port: Optional[int]
    init_method: Optional[str]  # what init_process_group gets; None for a world of one
    variables: List[str] = field(default_factory=list)  # names read (never values: they may be private)
    note: str = ""

    def to_dict(self) -> Dict[str, object]:
        """The place as report data (no address: it names a host)."""
        return {"launcher": self.launcher, "rank": self.rank, "world_size": self.world_size,
                "local_rank": self.local_rank, "local_world_size": self.local_world_size,
                "node_rank": self.node_rank, "variables": list(self.variables), "note": self.note}


def _int(env: Mapping[str, str], name: str, required: bool = True, minimum: int = 0) -> Optional[int]:
    """An integer variable, or None when absent and optional; LaunchError naming it when malformed."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise LaunchError(f"{name} is not set")
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise LaunchError(f"{name}={raw.strip()[:40]!r} is not a whole number") from None
    if value < minimum:
        raise LaunchError(f"{name}={value} is below {minimum}")
    return value


def _check(rank: int, world: int, local_rank: int, local_world: Optional[int], who: str) -> None:
    """Raises LaunchError when rank, world size and local rank do not fit together: bad launcher
    variables must fail here, before a rendezvous that would hang."""
    if world < 1:
        raise LaunchError(f"{who}: world size {world} is below 1")
    if rank >= world:
        raise LaunchError(f"{who}: rank {rank} is not below the world size {world}")
    if local_world is not None and local_rank >= local_world:
        raise LaunchError(f"{who}: local rank {local_rank} is not below the local world size {local_world}")


def expand_hostlist(text: str) -> List[str]:
    """Slurm's compact host list ("gpu[01-03,07],login1") as names, in order.

    Handles one bracket group per name with comma-separated numbers and ranges, zero padding kept,
    which is what SLURM_JOB_NODELIST holds for ordinary node names.
    """
    out: List[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", text or ""):
        item = item.strip()
        m = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\]([^\[\]]*)", item)
        if not m:
            if item:
                out.append(item)
            continue
        prefix, body, suffix = m.groups()
        for part in body.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise LaunchError(f"cannot read the Slurm host list {text[:60]!r}")
            width = len(lo)
            for n in range(int(lo), int(hi or lo) + 1):
                out.append(f"{prefix}{n:0{width}d}{suffix}")
    return out


def tcp_init(addr: str, port: int) -> str:
    """A tcp:// init method; IPv6 literals get brackets."""
    host = f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr
    return f"tcp://{host}:{port}"


def _torchrun(env: Mapping[str, str]) -> Place:
    """The Place from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, ...; init env://);
    LaunchError naming a missing or malformed one."""
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE", minimum=1)
    local_rank = _int(env, "LOCAL_RANK")
    local_world = _int(env, "LOCAL_WORLD_SIZE", required=False, minimum=1)
    node = _int(env, "GROUP_RANK", required=False)
    _check(rank, world, local_rank, local_world, "torchrun")
    port = _int(env, "MASTER_PORT", required=False, minimum=1)
    names = [n for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                         "MASTER_PORT", "TORCHELASTIC_RUN_ID") if n in env]
    return Place("torchrun", rank, world, local_rank, local_world, node, env.get("MASTER_ADDR"), port,
                 "env://" if world > 1 else None, names)


def _slurm(env: Mapping[str, str]) -> Place:
    """The Place from an srun step's variables; without MASTER_ADDR/PORT the step's first node and a
    port derived from SLURM_JOB_ID, so every task agrees without talking."""
    rank = _int(env, "SLURM_PROCID")
    world = _int(env, "SLURM_STEP_NUM_TASKS", required=False, minimum=1) or _int(env, "SLURM_NTASKS", minimum=1)
    local_rank = _int(env, "SLURM_LOCALID", required=False) or 0
    node = _int(env, "SLURM_NODEID", required=False)
    _check(rank, world, local_rank, None, "Slurm")
    names = [n for n in ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID",
                         "SLURM_STEP_ID", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID",
                         "MASTER_ADDR", "MASTER_PORT") if n in env]
    addr = env.get("MASTER_ADDR")
    if not addr and world > 1:
        hosts = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "")
        if not hosts:
            raise LaunchError("Slurm: neither MASTER_ADDR nor SLURM_STEP_NODELIST/SLURM_JOB_NODELIST is set, so the "
                              "tasks cannot find each other")
        addr = hosts[0]  # task 0 runs on the first node of the step
    port = _int(env, "MASTER_PORT", required=False, minimum=1)
    if port is None and world > 1:
        job = _int(env, "SLURM_JOB_ID", required=False)
        if job is None:
            raise LaunchError("Slurm: MASTER_PORT is not set and there is no SLURM_JOB_ID to derive one from")
        port = SLURM_PORT_BASE + job % SLURM_PORT_SPAN
    return Place("slurm", rank, world, local_rank, None, node, addr, port,
                 tcp_init(addr, port) if world > 1 else None, names)


def _plain(env: Mapping[str, str]) -> Place:
    """The Place from bare RANK/WORLD_SIZE (mpirun wrappers, hand-made launches); more than one rank
    needs MASTER_ADDR and MASTER_PORT."""
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE", minimum=1)
    local_rank = _int(env, "LOCAL_RANK", required=False) or 0
    _check(rank, world, local_rank, None, "RANK/WORLD_SIZE")
    if world > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise LaunchError("RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not: the ranks cannot meet")
    names = [n for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if n in env]
    return Place("env", rank, world, local_rank, None, None, env.get("MASTER_ADDR"),
                 _int(env, "MASTER_PORT", required=False, minimum=1), "env://" if world > 1 else None, names)


def discover(env: Mapping[str, str]) -> Place:
    """This process's Place; LaunchError with one line when the launcher's variables do not add up."""
    if "TORCHELASTIC_RUN_ID" in env or ("GROUP_RANK" in env and "LOCAL_RANK" in env and "RANK" in env):
        return _torchrun(env)
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        return _slurm(env)
    if "RANK" in env or "WORLD_SIZE" in env:
        return _plain(env)
    note = "no launcher variables: a world of one (use torchrun or srun to measure several ranks)"
    if "SLURM_PROCID" in env:
        # Inside an sbatch script but outside srun: SLURM_NTASKS counts tasks this process is not.
        note = "Slurm job but no job step (SLURM_STEP_ID unset): run it under srun to measure every task"
    return Place("none", 0, 1, 0, 1, None, None, None, None, [], note)
