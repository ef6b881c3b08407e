"""Where a command's outputs go: planned and checked before any probe runs, written whole or not at all.

`-` means stdout for every output option. Each option writes one format and refuses a file name
whose suffix names another (`-o r.md`: use --markdown). A report always has an HTML and a JSON
output: a path not given is the other's with its own suffix, else `gpudiag-report-<date>-<id>`
in the current folder. Before any probe runs, `check()` makes sure that the outputs are distinct
files (symlinks, `./` and hard links resolved; derived names included), that each is a regular
file or a new one (never a device, a pipe or a folder), that an existing file may be replaced
by this user, and that its folder accepts a new file.

`write()` stages every file as a temp file in its folder (report.atomic: fsync'ed, so a full disk
shows here), and only when all are staged renames them into place (each folder fsync'ed after): a
failure leaves every existing file as it was and no temp file behind. Stdout is written last; a reader that stops early (`| head -1`) ends
the command quietly (exit 141, as SIGPIPE would), a full device is a one-line error (exit 74).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from gpudiag import platform
from gpudiag.platform import signals
from gpudiag.report import atomic

STDOUT = "-"
EXIT_USAGE = 2    # bad input: a path refused before anything ran
EXIT_WRITE = 74   # an output could not be written (sysexits.h EX_IOERR); nothing half-written
EXIT_PIPE = 141   # stdout closed by its reader (128 + SIGPIPE); quiet

# kind -> (label, accepted suffixes, the report option that writes it)
FORMATS = {
    "html": ("HTML", (".html", ".htm"), "--output"),
    "json": ("JSON", (".json",), "--json"),
    "markdown": ("Markdown", (".md", ".markdown"), "--markdown"),
    "text": ("text", (), ""),  # a plain text output of any name (fleet's --exclude-file)
}


class OutputError(Exception):
    """An output that cannot be used or written; the message is one line, `exit_code` says which kind."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Output:
    """One output: its format, its path (None: stdout) and the option it came from (for messages)."""

    kind: str
    path: Optional[str]
    option: str
    derived_from: Optional[str] = None  # the option its name was derived from, or "default"
    title: Optional[str] = None  # how the summary names it ("Wrote <title>: path"), when not its format

    @property
    def to_stdout(self) -> bool:
        """True when this output goes to stdout ("-") rather than a file."""
        return self.path is None

    @property
    def label(self) -> str:
        """How the summary names this output ("HTML report", or its title), for "Wrote ..." lines."""
        return self.title or FORMATS[self.kind][0]

    def describe(self) -> str:
        """How messages name it: `--json r.json`, `--json r.json (derived from --output)`, `--json (stdout)`."""
        where = "-" if self.path is None else self.path
        if self.derived_from == "default":
            return f"the default {self.label} name {where}"
        if self.derived_from:
            return f"{self.option} {where} (derived from {self.derived_from})"
        return f"{self.option} {where}"


def _suffix_kind(path: str) -> Optional[str]:
    """The format ("html", "json", "markdown"...) a file name's extension names, or None: to hint at the right option for a misnamed file."""
    ext = os.path.splitext(path)[1].lower()
    return next((k for k, (_, exts, _) in FORMATS.items() if ext in exts), None)


def _check_name(kind: str, option: str, value: str, kinds: Sequence[str]) -> None:
    """Refuse an empty name, a NUL byte, or a suffix that names another format than the option writes."""
    if value == "":
        raise OutputError(f"{option} '': an empty file name; give a path, or - for stdout")
    if "\0" in value:
        raise OutputError(f"{option}: the file name holds a NUL byte")
    if value == STDOUT:
        return
    label, exts, _ = FORMATS[kind]
    if os.path.splitext(value)[1].lower() in exts:
        return
    other = _suffix_kind(value)
    hint = ""
    if other and other != kind and other in kinds:
        hint = f", or {FORMATS[other][2]} {value} for {FORMATS[other][0]}"
    raise OutputError(f"{option} {value}: {option} writes {label}; use a name ending in {' or '.join(exts)}"
                      f" (or - for stdout){hint}")


def plan_report(html: Optional[str], json_path: Optional[str], markdown: Optional[str], basename: str) -> List[Output]:
    """The outputs of `gpudiag report`: HTML and JSON always (a missing name derived), Markdown if asked."""
    given = {"html": html, "json": json_path, "markdown": markdown}
    for kind, value in given.items():
        if value is not None:
            _check_name(kind, FORMATS[kind][2], value, tuple(FORMATS))

    def pair(kind: str, other: str) -> Output:
        """The HTML or JSON output: as given, else named after the other one's path, else the default basename."""
        value, option = given[kind], FORMATS[kind][2]
        if value is not None:
            return Output(kind, None if value == STDOUT else value, option)
        src = given[other]
        ext = FORMATS[kind][1][0]
        if src not in (None, STDOUT):
            return Output(kind, os.path.splitext(src)[0] + ext, option, derived_from=FORMATS[other][2])
        return Output(kind, basename + ext, option, derived_from="default")

    outs = [pair("html", "json"), pair("json", "html")]
    if markdown is not None:
        outs.append(Output("markdown", None if markdown == STDOUT else markdown, "--markdown"))
    return outs


def plan_view(output: str, option: str = "--output") -> Output:
    """The one output of `render`/`compare`: its suffix picks HTML or Markdown; `-` is Markdown on stdout."""
    if output == "":
        raise OutputError(f"{option} '': an empty file name; give a .html or .md path, or - for stdout")
    if "\0" in output:
        raise OutputError(f"{option}: the file name holds a NUL byte")
    if output == STDOUT:
        return Output("markdown", None, option)
    kind = _suffix_kind(output)
    if kind not in ("html", "markdown"):
        raise OutputError(f"{option} {output}: use a .html or .md file name (or - for Markdown on stdout)")
    return Output(kind, output, option)


def plan_text(value: str, option: str, title: str) -> Output:
    """A plain text output of any file name (fleet's --exclude-file); `-` is stdout."""
    if value == "":
        raise OutputError(f"{option} '': an empty file name; give a path, or - for stdout")
    if "\0" in value:
        raise OutputError(f"{option}: the file name holds a NUL byte")
    return Output("text", None if value == STDOUT else value, option, title=title)


# ---------------------------------------------------------------- checking

def _target(out: Output, trial: bool = True) -> Tuple[str, Optional[os.stat_result]]:
    """The real file an output will replace (symlinks followed) and its stat; OutputError if it cannot be."""
    path = out.path or ""
    name = out.describe()
    try:
        st: Optional[os.stat_result] = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputError(f"{name}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"{name}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise OutputError(f"{name}: {exc}") from None
    real = os.path.realpath(path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{name} is a folder; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{name} is not a regular file (a device, pipe or socket) and would be replaced; "
                              "give a file name, or - for stdout")
        if not os.access(real, os.W_OK):
            raise OutputError(f"{name} exists and you may not overwrite it (read-only, or another user's)")
    folder = os.path.dirname(real) or "."
    if not os.path.isdir(folder):
        raise OutputError(f"{name}: folder {os.path.dirname(path) or '.'} does not exist")
    if st is not None and hasattr(os, "geteuid"):
        fst = os.stat(folder)
        euid = os.geteuid()
        if fst.st_mode & stat.S_ISVTX and euid not in (0, st.st_uid, fst.st_uid):
            raise OutputError(f"{name} is another user's file in a shared folder and cannot be replaced")
    if trial:
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gpudiag-check-", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise OutputError(f"{name}: cannot create a file in folder {os.path.dirname(path) or '.'} "
                              f"({exc.strerror or exc})") from None
    return real, st


def _identity(real: str, st: Optional[os.stat_result]):
    """What makes two paths the same file: device and inode if it exists, else the resolved name."""
    if st is not None:
        return ("inode", st.st_dev, st.st_ino)
    name = os.path.normcase(real)
    return ("name", name.casefold() if platform.NAMES_FOLD_CASE else name)


def _stdout_closed() -> bool:
    """True when there is no stdout to write to (`>&-`); a stream without a file descriptor counts as open."""
    stream = sys.stdout
    if stream is None:
        return True
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # a test harness's in-memory stream
        return False
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def check(outputs: Sequence[Output], inputs: Sequence[str] = ()) -> None:
    """Refuse, before anything runs, outputs that collide, cannot be files, or cannot be replaced."""
    to_stdout = [o for o in outputs if o.to_stdout]
    if len(to_stdout) > 1:
        raise OutputError(f"{' and '.join(o.option for o in to_stdout)} both write to stdout (-); "
                          "send one of them to a file")
    if to_stdout and _stdout_closed():
        raise OutputError("stdout is closed: give a file name instead of -")
    seen: Dict[object, str] = {}
    for path in inputs:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue
        seen[_identity(os.path.realpath(path), st)] = f"the input {path}"
    for out in outputs:
        if out.to_stdout:
            continue
        key = _identity(*_target(out))
        if key in seen:
            raise OutputError(f"{out.describe()} and {seen[key]} are the same file; give each output its own name")
        seen[key] = out.describe()


# ---------------------------------------------------------------- writing

Text = Union[str, Callable[[], str]]


def write(items: Sequence[Tuple[Output, Text]]) -> Dict[str, str]:
    """Write every output; returns {label: path} of the files written. OutputError (exit 74) on failure."""
    files = [(o, t) for o, t in items if not o.to_stdout]
    staged: List[Tuple[Output, str, str]] = []
    written: Dict[str, str] = {}
    current: Optional[Output] = None
    try:
        for out, text in files:
            current = out
            real, st = _target(out, trial=False)
            body = text() if callable(text) else text
            staged.append((out, real, atomic.stage(real, body, stat.S_IMODE(st.st_mode) if st else None)))
        with signals.deferred():  # all renamed, or the signal waits: never half the set
            for out, real, tmp in staged:
                current = out
                _target(out, trial=False)  # the path may have become a device or folder meanwhile
                atomic.commit(tmp, real)  # the rename, then the folder's fsync
                written[out.label] = out.path or ""
    except OSError as exc:
        for _, _, tmp in staged:
            atomic.unlink_quietly(tmp)
        what = f"{current.label} {current.path}" if current else "an output"
        done = f"; already written: {', '.join(written.values())}" if written else "; no output file was changed"
        raise OutputError(f"cannot write {what}: {exc.strerror or exc}{done}", EXIT_WRITE) from None
    except BaseException:  # cleanup only, re-raised: a signal or bug mid-set leaves no staged temp file
        for _, _, tmp in staged:
            atomic.unlink_quietly(tmp)
        raise
    for out, text in items:
        if out.to_stdout:
            write_stdout(text() if callable(text) else text)
    return written


def _silence(stream) -> None:
    """Point a broken stdout at the null device, so the flush at exit does not print an error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def write_stdout(text: str) -> None:
    """Print an output on stdout as UTF-8. Reader gone: quiet exit 141. Device full: OutputError (exit 74)."""
    stream = sys.stdout
    if stream is None:
        raise OutputError("stdout is closed", EXIT_WRITE)
    if not text.endswith("\n"):
        text += "\n"
    try:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(text.encode("utf-8", "backslashreplace"))
            buffer.flush()
        else:  # a test harness's text stream
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        _silence(stream)
        raise SystemExit(EXIT_PIPE) from None
    except OSError as exc:
        _silence(stream)
        raise OutputError(f"cannot write to stdout: {exc.strerror or exc}", EXIT_WRITE) from None


def say(text: str, err: bool = True, identify: bool = True) -> None:
    """A message for the user (summary, progress, error): redacted, without control characters.

    On stderr a failure is ignored (nothing is left to tell it with); on stdout it is handled as in
    write_stdout.
    """
    from gpudiag.report.redact import default_redactor

    # Redactor.text starts with redact.clean_text, which shows every control character as \xNN: nothing
    # left can move the cursor or retitle the terminal.
    line = default_redactor(identify).text(str(text))
    if not err:
        write_stdout(line)
        return
    stream = sys.stderr
    if stream is None:
        return
    try:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        stream.write(line.encode(encoding, "backslashreplace").decode(encoding, "replace") + "\n")
        stream.flush()
    except (OSError, ValueError, LookupError):
        pass
