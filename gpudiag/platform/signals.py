"""Stop signals (Ctrl-C, SIGTERM, SIGHUP) turned into one exception that cleanup code can rely on.

The CLI installs `handlers()` for its whole run. The first stop signal raises `Interrupted` in the
main thread; later ones are ignored, so the report of what finished can still be written (SIGKILL
always works). `deferred()` holds a signal back over a short section that must not be cut in half
(killing a child tree, renaming finished files into place), and `blocked()` keeps the signals away
from a child process while it is being started, so Ctrl-C never prints a half-started child's
traceback. Without `handlers()` (gpudiag used as a library) Ctrl-C stays a KeyboardInterrupt and
these helpers change nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List, Optional

# SIGHUP (terminal closed) does not exist on Windows; SIGBREAK (Ctrl-Break) exists only there.
STOP_SIGNALS: List[int] = [s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"))
                           if s is not None]


class Interrupted(BaseException):
    """A stop signal arrived. Not a KeyboardInterrupt, so click does not turn it into `Aborted!`."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def label(self) -> str:
        """How this signal is named to the user ("Ctrl-C", "SIGTERM")."""
        return label(self.signum)

    @property
    def exit_code(self) -> int:
        """The exit status for this signal: 128 + its number, as a shell reports it."""
        return exit_code(self.signum)


def label(signum: Optional[int]) -> str:
    """How a stop signal is named to the user: 'Ctrl-C' for SIGINT, else the signal's name."""
    if signum is None or signum == signal.SIGINT:
        return "Ctrl-C"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: Optional[int]) -> int:
    """128 + the signal number, what a shell reports for a process stopped by that signal."""
    return 128 + (signum if signum is not None else signal.SIGINT)


class _State:
    """Process-wide signal bookkeeping: handlers installed, deferred-block depth, the signal held back and the one already raised."""
    installed = False
    defer_depth = 0
    pending: Optional[int] = None
    raised: Optional[int] = None


_state = _State()


def _on_signal(signum, frame) -> None:
    """Signal handler: raises Interrupted for the first stop signal, holds it back inside deferred() blocks, and ignores later ones so cleanup can finish."""
    if _state.raised is not None:
        return  # already stopping: the first signal decides, the cleanup must finish
    if _state.defer_depth:
        _state.pending = _state.pending or signum
        return
    _state.raised = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def handlers() -> Iterator[None]:
    """Install the stop-signal handlers for the duration (main thread only); restore the old ones."""
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    old = {}
    for s in STOP_SIGNALS:
        try:
            # A signal ignored when gpudiag started (nohup, `&` in a script) stays ignored: the user asked so.
            if signal.getsignal(s) == signal.SIG_IGN:
                continue
            old[s] = signal.signal(s, _on_signal)
        except (OSError, ValueError):  # a signal this platform will not let us handle
            pass
    _state.installed, _state.pending, _state.raised, _state.defer_depth = True, None, None, 0
    try:
        yield
    finally:
        for s, h in old.items():
            try:
                signal.signal(s, h)
            except (OSError, ValueError, TypeError):
                pass
        _state.installed = False


def stopping() -> Optional[int]:
    """The stop signal already received (and raised), or None."""
    return _state.raised


def mark_stopping(signum: int) -> None:
    """Record a stop signal that another part of the program handles (a fleet rank's watchdog thread, while
    the main thread waits in native code): from now on the handlers raise nothing, as after a first signal."""
    if _state.raised is None:
        _state.raised = signum


def check_pending() -> None:
    """Raise `Interrupted` for a signal held back by a `deferred()` block that ended in another exception."""
    if _state.pending is not None and _state.raised is None and not _state.defer_depth:
        signum, _state.pending = _state.pending, None
        _state.raised = signum
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals back until the block ends, then raise `Interrupted` (unless already raising)."""
    _state.defer_depth += 1
    try:
        yield
    except BaseException:  # bookkeeping only, re-raised: the depth must unwind, and the pending signal waits
        _state.defer_depth -= 1
        raise
    _state.defer_depth -= 1
    check_pending()


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Block stop signals at the OS level while a child is started, so the child inherits them blocked.

    A child started meanwhile (spawn: fork + exec) keeps the blocked mask until it sets its own
    handling (`child_defaults`); the parent gets a signal that arrived meanwhile right after the block,
    as `Interrupted` (with `handlers()`) or KeyboardInterrupt.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # Windows: nothing to block
        yield
        return
    wanted = set(STOP_SIGNALS)
    old = mask(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def child_defaults() -> None:
    """In a probe child: ignore Ctrl-C (the parent handles it and kills the child), default SIGTERM/SIGHUP.

    Ignored SIGINT is inherited by the processes the probe starts, so none of them prints a
    KeyboardInterrupt traceback when Ctrl-C reaches the whole process group.
    """
    for s in STOP_SIGNALS:
        try:
            signal.signal(s, signal.SIG_IGN if s == signal.SIGINT else signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is not None:
        mask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
