"""`gpudiag env` against `python -m torch.utils.collect_env` on this machine: medians of N runs.

Usage: python benchmarks/env_vs_collect_env.py [RUNS]
"""

import sys

from common import compare

if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    compare("python -m gpudiag env", [sys.executable, "-m", "gpudiag", "env"],
            "python -m torch.utils.collect_env", [sys.executable, "-m", "torch.utils.collect_env"], runs)
