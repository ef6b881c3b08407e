"""`python -m gpudiag` and the `gpudiag` console script: the CLI, with a stop signal during start-up ending quietly."""

import signal
import sys


def _exit_quietly(signum, frame) -> None:
    """Signal handler used only until the CLI is loaded: exit 128 + signal with no traceback."""
    raise SystemExit(128 + signum)


def run() -> None:
    """Import the CLI and run it; Ctrl-C, SIGTERM or SIGHUP while it loads exit 128 + signal, no traceback.

    The CLI installs its own handlers once loaded (gpudiag.platform.signals).
    """
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) != signal.SIG_IGN:  # nohup's SIG_IGN stays
            signal.signal(signum, _exit_quietly)
    try:
        from gpudiag.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main(prog_name="gpudiag")


if __name__ == "__main__":
    run()
