"""Privacy for reports attached to public issues: every string that reaches an output passes here.

Always: values that look like secrets are replaced (known token shapes, bearer/basic credentials,
`key=`/`token=`/`password=` assignments, credentials in URLs, private-key blocks, long opaque
strings), GPU UUIDs and serial numbers are dropped, and text is made encodable (a lone surrogate
from a non-UTF-8 byte becomes `\\xff`). By default (unless --no-redact): the hostname and username
become a stable short hash, the home folder `~` and any other user's home folder `~user-<hash>`,
so two reports of one machine still compare.

Only VALUES are rewritten. Dictionary keys are field names of the report contract: a machine
called `status` or a user called `data` must not rename fields (keys are only made encodable).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import os
import re
import socket
import sys
from typing import Any, Dict, Iterable, List, Optional

SECRET_MARK = "[redacted: looks like a secret]"

_DROP_KEYS = {"uuid", "gpu_uuid", "serial", "board_serial", "serial_number", "board_id"}
# A value stored under such a key is masked whole.
_SECRET_KEY = re.compile(r"(?i)(token|secret|passw(or)?d|passphrase|api[_-]?key|access[_-]?key|auth(?!or)|"
                         r"credential|private[_-]?key|cookie|signature)")

_TOKEN_PATTERNS = [
    re.compile(p) for p in (
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",   # PEM, OpenSSH, PGP private keys
        r"gh[pousr]_[A-Za-z0-9]{20,}",          # GitHub tokens
        r"github_pat_[A-Za-z0-9_]{20,}",
        r"glpat-[A-Za-z0-9_\-]{20,}",            # GitLab
        r"hf_[A-Za-z0-9]{20,}",                  # Hugging Face
        r"sk-[A-Za-z0-9_\-]{20,}",               # OpenAI / Anthropic style
        r"(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}",  # Stripe
        r"npm_[A-Za-z0-9]{36}",                  # npm
        r"pypi-[A-Za-z0-9_\-]{50,}",             # PyPI upload tokens
        r"xox[abeprs]-[A-Za-z0-9\-]{10,}",       # Slack
        r"ya29\.[0-9A-Za-z_\-]{20,}",            # Google OAuth access token
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[0-9A-Z]{16}\b",  # AWS key ids
        r"AIza[0-9A-Za-z_\-]{30,}",              # Google API key
        r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",  # JWT
    )
]
# `Authorization: Basic dXNlcjpwYXNz`, `Cookie: session=...`: everything after the header name goes.
_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|x-auth-token|x-amz-security-token|(?:set-)?cookie)"
                     r"([\"']?\s*[:=]\s*[\"']?)(?!\s*\[redacted)([^\r\n\"']+)")
# A credential after its scheme word; it must hold a digit, so prose ("basic installation") stays.
_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\s*\[redacted)(?=[A-Za-z0-9._~+/\-]*\d)([A-Za-z0-9._~+/\-]{8,}=*)")
# `password=hunter2`, `'aws_secret_access_key': 'abc'`, `api_key: x`: the name stays, the value goes.
_ASSIGNMENT = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:[\w.-]*?(?:password|passwd|passphrase|pwd|token|secret|api[_-]?key|apikey|"
    r"access[_-]?key|private[_-]?key|credentials?|auth(?!or))[\w.-]*)|key|sig|signature)"
    r"([\"']?\s*[=:]\s*)(?![\s,;=]|$|\s*\[redacted)(\"[^\"]*\"|'[^']*'|[^\s,;&\"'<>)\]}]+)")
# `--password hunter2`, `--token abc`
_FLAG = re.compile(r"(?i)(--?(?:password|passwd|passphrase|token|secret|api[_-]?key|access[_-]?key|auth[_-]?token)"
                   r"[\w-]*)(\s+)(?!-|\s*\[redacted)(\S+)")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@")  # https://user:pass@host
# A long opaque run of letters, digits and base64 punctuation with both cases and digits: an AWS secret
# access key (40 characters), an API key without a known prefix, a private key's body cut from its header.
_OPAQUE = re.compile(r"(?<![\w+/=.\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![\w+/=.\-])")
_WORDISH = re.compile(r"[A-Z]{2,}|[A-Z]?[a-z]+(?:[A-Z][a-z]+)*\d{0,4}|\d+[A-Za-z]{0,3}")
_HIGH_ENTROPY = re.compile(r"^[A-Za-z0-9+/_=\-.]{32,}$")

# Another user's home folder, whatever the current user is called (WSL shows the Windows user's).
_HOME_OWNER = re.compile(r"(?i)([/\\](?:home|Users)(?:[/\\]{1,2}))"
                         r"(?!~|Public\b|Default\b|Default User\b|Shared\b|All Users\b|linuxbrew\b|user-[0-9a-f]{8}\b)"
                         r"([^/\\\s\"'`|<>;,:*?]+)")
# Host and user names match case-sensitively (as the OS reports them) so that a machine called
# "Nova" does not rewrite the word "nova" elsewhere; home paths are caught by _HOME_OWNER too.
# Default host/user names of distributions and images identify nobody, and hashing them would
# also rewrite facts such as "Kali GNU/Linux" (Kali's default hostname is "kali").
_GENERIC_NAMES = {"localhost", "kali", "ubuntu", "debian", "fedora", "arch", "archlinux", "linux",
                  "user", "admin", "administrator", "root", "pi", "raspberrypi", "wsl", "docker",
                  "container", "host", "runner", "ec2-user", "centos", "alpine", "vm", "gpu", "server",
                  "desktop", "laptop", "pc", "workstation", "node", "windows", "test"}
# Names that are also words of the report itself: a user called `python` or a machine called
# `status` is removed from its home path, but the word is not hashed everywhere (that would
# rewrite facts such as "/usr/bin/python" or "torch 2.3").
_COMMON_WORDS = _GENERIC_NAMES | {
    "python", "python3", "torch", "pytorch", "data", "status", "cuda", "nvidia", "cpu", "system", "driver",
    "report", "probe", "probes", "cycle", "launch", "pcie", "memory", "home", "work", "dev", "lab", "ml", "ai",
    "train", "model", "build", "main", "master", "compute", "graphics", "none", "null", "true", "false", "yes",
    "no", "ok", "skipped", "failed", "threads", "processes", "serial", "info", "warning", "critical", "env",
    "mode", "quick", "full", "name", "version", "kernel", "os", "ram", "swap", "intel", "amd", "jupyter",
    "conda", "venv", "pip", "app", "service", "www", "web", "share", "shared", "public", "guest", "demo",
    "student", "ci", "git", "gpudiag", "default", "local", "cloud", "cluster", "worker", "workers", "batch",
    "nccl", "numpy", "tmp", "var", "usr", "bin", "lib", "opt", "mnt", "srv", "proc", "sys", "etc", "users",
}
_WORD = re.compile(r"[\w.-]+")  # the words a host name can be part of (its labels, dots between)
_GPU_UUID = re.compile(r"(?i)\b(GPU|MIG)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\x7f-\x9f]")


def clean_text(value: str) -> str:
    """The text made safe to write anywhere: a lone surrogate (a non-UTF-8 byte decoded by the OS layer)
    becomes \\xNN, so is a control character (a terminal escape sequence from a child's output); a carriage
    return becomes a line break."""
    if _CONTROL.search(value):
        value = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", value.replace("\r\n", "\n").replace("\r", "\n"))
    if not _SURROGATE.search(value):
        return value

    def esc(m: "re.Match[str]") -> str:
        """The escape for one lone surrogate: \\xNN for a byte the OS decoded with surrogateescape, else \\uNNNN."""
        c = ord(m.group(0))
        return f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"

    return _SURROGATE.sub(esc, value)


_PLAIN = frozenset({int, float, bool, type(None)})  # values the redactor passes through as they are


_DROP = object()  # the cleaned form of a key whose value is dropped
_KEYS: Dict[str, Any] = {}  # key -> cleaned key or _DROP: the report's field names, a few hundred
MAX_KEYS_REMEMBERED = 4096


def _clean_key(key: str) -> Any:
    """A dictionary key made encodable, or _DROP for a key whose value is dropped (a UUID, a serial)."""
    return _DROP if key.lower() in _DROP_KEYS else clean_text(key)


def _opaque(token: str) -> bool:
    """True for a token that looks random: both cases, many distinct characters, not hex, not made of words.

    A path (`/a/Bb2/...`) or an identifier (`NVIDIA_GeForce_RTX_4090_...`) is made of words, a key is not.
    """
    distinct = len(set(token))
    if not (re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and distinct >= 16
            and (re.search(r"\d", token) or distinct >= 20) and not re.fullmatch(r"[0-9a-fA-F]+", token)):
        return False
    parts = [p for p in re.split(r"[/_\-]", token) if p]
    worded = sum(len(p) for p in parts if len(p) >= 2 and _WORDISH.fullmatch(p))
    return worded < 0.6 * sum(len(p) for p in parts)


def looks_secret(value: str, strict: bool = False) -> bool:
    """True for strings shaped like tokens/keys/passwords.

    strict also flags any long opaque string (letters and digits, 32+ chars, no spaces or path
    separators): right for free-form values such as environment variables.
    """
    if not isinstance(value, str) or not value:
        return False
    if any(p.search(value) for p in _TOKEN_PATTERNS) or _ASSIGNMENT.search(value) or _HEADER.search(value) \
            or _SCHEME.search(value) or _URL_CREDENTIALS.search(value) or _FLAG.search(value) \
            or any(_opaque(m.group(0)) for m in _OPAQUE.finditer(value)):
        return True
    if strict and _HIGH_ENTROPY.match(value) and re.search(r"\d", value) and re.search(r"[A-Za-z]", value):
        return True
    return False


def short_hash(value: str) -> str:
    """First 8 hex digits of a salted SHA-256 of the value: a stable pseudonym (same host, same hash) that does not reveal the name."""
    return hashlib.sha256(("gpudiag:" + value).encode("utf-8", "surrogatepass")).hexdigest()[:8]


@functools.lru_cache(maxsize=1)
def _other_homes() -> List[str]:
    """Home folders of the machine's other human accounts (POSIX passwd), wherever they live."""
    try:
        import pwd
    except ImportError:  # Windows: C:\Users\<name> is caught by _HOME_OWNER
        return []
    homes = []
    try:
        entries = pwd.getpwall()
    except OSError:
        return []
    for e in entries[:5000]:
        d = e.pw_dir or ""
        if e.pw_uid >= 1000 and e.pw_uid != 65534 and d.count("/") >= 2 and not d.startswith(("/nonexistent", "/var/", "/run/")):
            homes.append(d.rstrip("/"))
    return homes


def _identity() -> Dict[str, Any]:
    """This machine's hostname, username (None when unknown), home folder and other users' homes: the strings the redactor must remove."""
    try:
        user = getpass.getuser()
    except (KeyError, ImportError, OSError):
        # no login variable and no passwd entry: KeyError from pwd (container uid), ImportError where pwd
        # is missing (Windows), OSError from Python 3.13 on; the user is then simply not known
        user = None
    home = os.path.expanduser("~")
    try:
        cwd: Optional[str] = os.getcwd()
    except OSError:  # the folder was removed under us
        cwd = None
    return {"hostname": socket.gethostname() or None, "user": user,
            "home": home if home not in ("~", "/", "") else None, "homes": _other_homes(),
            # A virtual environment and the working folder live where the user chose: their paths name
            # projects (or people); a base install (/usr, /opt/conda, pyenv under ~) says nothing of the kind.
            "venv": sys.prefix if sys.prefix != sys.base_prefix else None, "cwd": cwd}


# Folders whose names say nothing about the user: the working folder is kept when it is one of these
# or directly below one (a checkout in /tmp/x says nothing; /data/alice-vision does).
_SYSTEM_ROOTS = ("/", "/tmp", "/var/tmp", "/usr", "/usr/local", "/opt", "/srv", "/mnt", "/media", "/root", "/home")


def _private_folder(path: Optional[str]) -> bool:
    """True when a folder's path may name a project or a person (two or more components, not a system folder)."""
    if not path:
        return False
    norm = path.replace("\\", "/").rstrip("/") or "/"
    if re.match(r"^[A-Za-z]:/?$", norm) or norm in _SYSTEM_ROOTS:
        return False
    return norm.count("/") >= 2 or bool(re.match(r"^[A-Za-z]:/[^/]+/", norm))


class Redactor:
    """Redacts strings, and the string values (never the keys) of JSON-like data."""

    def __init__(self, identify: bool = True, identity: Optional[Dict[str, Any]] = None,
                 hostnames: Iterable[str] = (), memo: bool = False):
        """hostnames: other machines' names to hash too (a fleet's nodes), however many: they are found by
        looking up each word of a text, not by one pattern per name. memo: remember each text's redaction
        (for one pass over a large report whose strings repeat, e.g. a fleet's ranks)."""
        self.identify = identify
        ident = identity if identity is not None else _identity()
        self._subs = []  # (compiled pattern, replacement), longest first
        self._memo: Optional[Dict[Any, str]] = {} if memo else None
        self._hosts: Dict[str, List[Any]] = {}  # a name's dot-separated label -> [(pattern, replacement)]
        if identify:
            for name in sorted(set(hostnames), key=len, reverse=True):
                for pattern, repl, label in self._host_patterns(name):
                    self._hosts.setdefault(label, []).append((pattern, repl))
        if identify:
            venv, cwd = ident.get("venv"), ident.get("cwd")
            if venv and _private_folder(venv):
                self._subs.append((self._path_pattern(venv), "<venv>"))
            if cwd and _private_folder(cwd) and cwd != venv:
                self._subs.append((self._path_pattern(cwd), "<cwd>"))
            home = ident.get("home")
            if home:
                self._subs.append((self._path_pattern(home), "~"))
            for other in sorted(set(ident.get("homes") or []) - {home}, key=len, reverse=True):
                owner = os.path.basename(other.rstrip("/\\")) or other
                self._subs.append((self._path_pattern(other), "~user-" + short_hash(owner.lower())))
            self._subs += [(pattern, repl) for pattern, repl, _ in self._host_patterns(ident.get("hostname"))]
            user = ident.get("user")
            if user and len(user) >= 2 and user.lower() not in _COMMON_WORDS:
                # Bounded by anything but a letter or digit: `alicesmith-projects`, `alicesmith_env` go too.
                self._subs.append((re.compile(r"(?<![A-Za-z0-9])" + re.escape(user) + r"(?![A-Za-z0-9])"),
                                   "user-" + short_hash(user.lower())))

    @staticmethod
    def _host_patterns(host: Optional[str]) -> List[Any]:
        """[(pattern, "host-<hash>", the whole name)] for a host name and its FQDN's first label (which alone
        identifies the machine too); none for a name too short or too common to hash everywhere."""
        if not host or len(host) < 2 or host.lower() in _COMMON_WORDS:
            return []
        out = [(re.compile(r"(?<![\w-])" + re.escape(host) + r"(?![\w-])"), "host-" + short_hash(host.lower()), host)]
        short = host.split(".")[0]
        if short != host and len(short) >= 2 and short.lower() not in _COMMON_WORDS:
            out.append((re.compile(r"(?<![\w-])" + re.escape(short) + r"(?![\w.-])"),
                        "host-" + short_hash(short.lower()), short))
        return out

    def _other_hosts(self, value: str) -> str:
        """`value` with the other machines' names hashed: only the patterns of names that occur as a run of
        whole dot-separated labels of one of its words are applied."""
        for word in _WORD.findall(value):
            labels = word.split(".")
            for i in range(len(labels)):
                for j in range(i + 1, len(labels) + 1):
                    for pattern, repl in self._hosts.get(".".join(labels[i:j]), ()):
                        value = pattern.sub(repl, value)
        return value

    @staticmethod
    def _path_pattern(path: str) -> "re.Pattern[str]":
        """Regex matching a home path only as a whole path component (case-insensitive for Windows drive paths), so /home/al does not hit /home/alice."""
        flags = re.I if re.match(r"^[A-Za-z]:", path) else 0  # Windows paths ignore case
        return re.compile(re.escape(path.rstrip("/\\")) + r"(?=$|[/\\\s\"'`|,;:)\]}])", flags)

    def text(self, value: str, key: str = "") -> str:
        """The string with secrets, GPU UUIDs and (identify) identity removed; `key` names the field it sits in."""
        if self._memo is None:
            return self._text(value, key)
        memo_key = (value, key)
        out = self._memo.get(memo_key)
        if out is None:
            out = self._memo[memo_key] = self._text(value, key)
        return out

    def _text(self, value: str, key: str) -> str:
        """text() without the memo."""
        value = clean_text(value)
        if value and _SECRET_KEY.search(key or ""):
            return SECRET_MARK
        # Only the secret-looking spans go, so a long text (the env Markdown, a stderr tail) keeps the rest.
        for pattern in _TOKEN_PATTERNS:
            value = pattern.sub(SECRET_MARK, value)
        value = _HEADER.sub(lambda m: m.group(1) + m.group(2) + SECRET_MARK, value)
        value = _SCHEME.sub(lambda m: m.group(1) + m.group(2) + SECRET_MARK, value)
        value = _URL_CREDENTIALS.sub(r"\1[redacted]@", value)
        value = _ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + SECRET_MARK, value)
        value = _FLAG.sub(lambda m: m.group(1) + m.group(2) + SECRET_MARK, value)
        value = _OPAQUE.sub(lambda m: SECRET_MARK if _opaque(m.group(0)) else m.group(0), value)
        value = _GPU_UUID.sub("[GPU UUID removed]", value)
        for pattern, repl in self._subs:
            value = pattern.sub(repl, value)
        if self._hosts:
            value = self._other_hosts(value)
        if self.identify:
            value = _HOME_OWNER.sub(lambda m: m.group(1) + "user-" + short_hash(m.group(2).lower()), value)
        return value

    def __call__(self, obj: Any, key: str = "") -> Any:
        kind = type(obj)
        if kind is str:
            return self.text(obj, key)
        if kind in _PLAIN:
            return obj
        if isinstance(obj, dict):
            out = {}
            text = self.text
            for k, v in obj.items():
                if isinstance(k, str):
                    clean = _KEYS.get(k)
                    if clean is None:
                        clean = _clean_key(k)
                        if len(_KEYS) < MAX_KEYS_REMEMBERED:
                            _KEYS[k] = clean
                    if clean is _DROP:
                        continue
                    tv = type(v)
                    # Inline: a fleet report holds millions of numbers and strings, each a call otherwise.
                    out[clean] = v if tv in _PLAIN else text(v, k) if tv is str else self(v, k)
                else:
                    out[k] = self(v, "")
            return out
        if isinstance(obj, (list, tuple)):
            return [v if type(v) in _PLAIN else self(v, key) for v in obj]
        if isinstance(obj, str):
            return self.text(obj, key)
        return obj


def redact(report: Any, identify: bool = True, identity: Optional[Dict[str, Any]] = None,
           hostnames: Iterable[str] = ()) -> Any:
    """A redacted copy of any JSON-like value (the report, an env summary, a message); `hostnames`: other
    machines' names to hash as well (a fleet's nodes)."""
    return Redactor(identify, identity, hostnames, memo=True)(report)


def allowlisted_env(environ: Dict[str, str], names: Iterable[str], prefixes: Iterable[str] = ()) -> Dict[str, str]:
    """Only the named variables (and those with the given prefixes), secret-looking values masked."""
    names = set(names)
    prefixes = tuple(prefixes)
    out = {}
    for k in sorted(environ):
        if k in names or (prefixes and k.startswith(prefixes)):
            v = clean_text(environ[k])
            out[clean_text(k)] = SECRET_MARK if (looks_secret(v, strict=True) or _SECRET_KEY.search(k)) else v
    return out


@functools.lru_cache(maxsize=2)
def default_redactor(identify: bool = True) -> Redactor:
    """One Redactor per setting for this process's identity: messages are redacted one at a time."""
    return Redactor(identify)
