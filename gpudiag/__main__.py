"""`python -m gpudiag` and the `gpudiag` console script: the CLI, with Ctrl-C during start-up ending quietly."""

import sys


def run() -> None:
    """Import the CLI (a Ctrl-C meanwhile exits 130 without a traceback) and run it."""
    try:
        from gpudiag.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main(prog_name="gpudiag")


if __name__ == "__main__":
    run()
