"""`gpudiag watch`'s live status line: on a terminal (a pseudo-terminal here) it is drawn on the bottom row
and updated every second while the job's own lines scroll above it intact, and it is gone before the
summary; on a pipe, and with --no-status, nothing is added. Real processes; no timing is asserted beyond
a job long enough for two redraws."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

import tests
from gpudiag.views.progress import LiveLine
from gpudiag.views.watch_view import status_line

PY = sys.executable
ROWS, COLS = 24, 160
# Three lines 1.2 s apart: the job runs long enough for the line to be drawn at least twice.
JOB = "import time\nfor i in range(3):\n    print('job line', i, flush=True)\n    time.sleep(1.2)\n"
SEGMENT = re.compile(r"\x1b7\x1b\[(\d+);1H\x1b\[2K([^\x1b]*)\x1b8")  # one redraw of the pinned line


def _argv(tmp_path, *extra):
    return [PY, "-m", "gpudiag", "watch", "--no-gpu", "--interval", "0.2", *extra, "-o", str(tmp_path / "w.html"),
            "--", PY, "-c", JOB]


def _in_pty(argv, timeout=120):
    """Run argv with a pseudo-terminal of ROWS x COLS as its stdin, stdout and stderr; all it wrote, decoded."""
    env = dict(os.environ, PYTHONPATH=tests.ROOT)
    pid, fd = pty.fork()
    if pid == 0:  # the child: size its terminal, then become the command
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        os.execvpe(argv[0], argv, env)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def test_on_a_terminal_the_line_is_pinned_updated_and_gone_before_the_summary(tmp_path):
    code, out = _in_pty(_argv(tmp_path))
    assert code == 0, out[-2000:]
    draws = SEGMENT.findall(out)
    assert len(draws) >= 2 and {row for row, _ in draws} == {str(ROWS)}  # always the bottom row
    texts = [t for _, t in draws]
    assert all(t.startswith("gpudiag watch ") for t in texts) and len(set(texts)) >= 2  # it updates
    assert any("memory " in t and "job CPU " in t for t in texts)
    assert all(len(t) < COLS for t in texts)  # never wraps (a wrapped bottom line would scroll)
    # The scroll region leaves the bottom row out while the job runs, and is reset before the summary.
    assert f"\x1b[1;{ROWS - 1}r" in out
    reset = out.index("\x1b7\x1b[r")
    summary = out.index("gpudiag watch: the job exited with code 0")
    assert reset < summary and not SEGMENT.search(out[reset:])
    # The job's own lines, with the status line's redraws taken out, are whole.
    job = SEGMENT.sub("", out)
    for i in range(3):
        assert f"job line {i}\r\n" in job


def test_no_status_on_a_terminal_adds_nothing(tmp_path):
    code, out = _in_pty(_argv(tmp_path, "--no-status"))
    assert code == 0 and "\x1b" not in out and "job line 2\r\n" in out


def test_on_a_pipe_nothing_extra_appears(tmp_path):
    env = dict(os.environ, PYTHONPATH=tests.ROOT)
    proc = subprocess.run(_argv(tmp_path), capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(f"job line {i}\n" for i in range(3))
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr and "gpudiag watch 0 s" not in proc.stderr


def test_the_line_says_what_was_seen_so_far_and_leaves_out_the_rest():
    line = status_line({"elapsed_s": 12.4, "cpu_cores": 0.98, "logical_cores": 2, "gil_held_fraction": 0.97,
                        "gil_samples": 40, "memory_bytes": 363 * 2**20, "memory_growth_bytes_per_s": 1.5 * 2**20,
                        "gpu_util_percent": 45.0})
    assert line == ("gpudiag watch 12 s | job CPU 0.98 of 2 cores | GIL 97 % (40 samples) | memory 363 MiB, "
                    "+1.5 MiB/s | GPU 45 %")
    assert status_line({"elapsed_s": 0.2}) == "gpudiag watch 0 s"
    assert status_line({"elapsed_s": 3, "memory_bytes": 2**30, "memory_growth_bytes_per_s": -2048.0}) == \
        "gpudiag watch 3 s | memory 1 GiB, -2 KiB/s"


class _Terminal:
    """stderr as a terminal of a given size: what was written, in order."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@pytest.mark.parametrize("rows,pinned", [(24, True), (2, False)])
def test_a_pinned_line_sets_and_resets_the_scroll_region_or_falls_back(monkeypatch, rows, pinned):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.setattr(LiveLine, "_size", staticmethod(lambda: (40, rows)))
    line = LiveLine(True, interval=0.01, pinned=True)
    line.start(lambda: "x" * 100)  # longer than the terminal is wide
    deadline = time.monotonic() + 10
    while "x" not in term.text and time.monotonic() < deadline:
        time.sleep(0.01)
    line.stop()
    if pinned:
        assert term.text.startswith("\n\x1b7\x1b[1;23r\x1b8\x1b[1A\x1b7\x1b[24;1H\x1b[2K" + "x" * 39 + "\x1b8")
        assert term.text.endswith("\x1b7\x1b[r\x1b[24;1H\x1b[2K\x1b8")
    else:  # no room for a pinned row: the carriage-return line
        assert term.text.startswith("\r\x1b[K" + "x" * 39) and term.text.endswith("\r\x1b[K")
