"""`gpudiag fleet`: every rank of a torchrun or Slurm job measures itself; rank 0 names the slow GPU,
node or link and writes one report (docs/fleet.md).

By role: launcher.py (rank and rendezvous from the launcher's environment), measure.py (what one rank
measures), transport.py (torch.distributed plumbing with deadlines), collectives.py (the sweep and the
nccl-tests bandwidth formulas), scores.py (robust outlier scores), consistency.py and analysis.py
(findings, outliers, exclude list, exit code), assemble.py (the report), run.py (one rank's part),
merge.py (`gpudiag fleet merge`). Nothing here imports torch at module level.
"""
