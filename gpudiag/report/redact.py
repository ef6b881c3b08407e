"""Privacy for reports attached to public issues.

Always: values that look like secrets are replaced, GPU UUIDs and serial numbers are dropped.
By default (unless --no-redact): the hostname and username become a stable short hash and home
paths become `~`, so two reports of one machine still compare.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
from typing import Any, Dict, Iterable, Optional

SECRET_MARK = "[redacted: looks like a secret]"

_DROP_KEYS = {"uuid", "gpu_uuid", "serial", "board_serial", "serial_number", "board_id"}
_SECRET_KEY = re.compile(r"(?i)(token|secret|passw(or)?d|passwd|api[_-]?key|auth|credential|private[_-]?key)")
_TOKEN_PATTERNS = [
    re.compile(p) for p in (
        r"gh[pousr]_[A-Za-z0-9]{20,}",          # GitHub tokens
        r"github_pat_[A-Za-z0-9_]{20,}",
        r"glpat-[A-Za-z0-9_\-]{20,}",            # GitLab
        r"hf_[A-Za-z0-9]{20,}",                  # Hugging Face
        r"sk-[A-Za-z0-9_\-]{20,}",               # OpenAI-style
        r"xox[baprs]-[A-Za-z0-9\-]{10,}",        # Slack
        r"(?:AKIA|ASIA)[0-9A-Z]{16}",            # AWS access key id (long-lived, temporary)
        r"AIza[0-9A-Za-z_\-]{30,}",              # Google API key
        r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",  # JWT
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    )
]
# `password=hunter2`, `AWS_SECRET_ACCESS_KEY: abc...`: the name stays, the value goes.
_ASSIGNMENT = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)[\w.-]*)"
                         r"(\s*[=:]\s*)(?![\s,;=]|$)(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)")
_URL_CREDENTIALS = re.compile(r"(://)[^/\s:@]+:[^/\s@]+@")  # https://user:pass@host
# A home folder's owner, whatever the current user is called (WSL shows the Windows user's).
_HOME_OWNER = re.compile(r"(?i)((?:^|[\s\"'=(:])(?:/home/|/Users/|/mnt/[a-z]/Users/|[a-z]:\\{1,2}Users\\{1,2}))"
                         r"(?!~|Public\b|Default\b|Shared\b|All Users\b|user-[0-9a-f]{8}\b)([^/\\\s\"']+)")
# Host and user names match case-sensitively (as the OS reports them) so that a machine called
# "Nova" does not rewrite the word "nova" elsewhere; home paths are caught by _HOME_OWNER too.
# Default host/user names of distributions and images identify nobody, and hashing them would
# also rewrite facts such as "Kali GNU/Linux" (Kali's default hostname is "kali").
_GENERIC_NAMES = {"localhost", "kali", "ubuntu", "debian", "fedora", "arch", "archlinux", "linux",
                  "user", "admin", "administrator", "root", "pi", "raspberrypi", "wsl", "docker",
                  "container", "host", "runner", "ec2-user", "centos", "alpine", "vm", "gpu", "server",
                  "desktop", "laptop", "pc", "workstation", "node", "windows", "test"}
_GPU_UUID = re.compile(r"(?i)\b(GPU|MIG)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_HIGH_ENTROPY = re.compile(r"^[A-Za-z0-9+/_=\-.]{32,}$")


def looks_secret(value: str, strict: bool = False) -> bool:
    """True for strings shaped like tokens/keys/passwords.

    strict also flags any long opaque string (letters and digits, 32+ chars, no spaces or path
    separators): right for free-form values such as environment variables.
    """
    if not isinstance(value, str) or not value:
        return False
    if any(p.search(value) for p in _TOKEN_PATTERNS) or _ASSIGNMENT.search(value) \
            or _URL_CREDENTIALS.search(value):
        return True
    if strict and _HIGH_ENTROPY.match(value) and re.search(r"\d", value) and re.search(r"[A-Za-z]", value):
        return True
    return False


def short_hash(value: str) -> str:
    return hashlib.sha256(("gpudiag:" + value).encode("utf-8")).hexdigest()[:8]


def _identity() -> Dict[str, Optional[str]]:
    try:
        user = getpass.getuser()
    except Exception:  # getuser raises on some containers without a passwd entry
        user = None
    home = os.path.expanduser("~")
    return {"hostname": socket.gethostname() or None, "user": user,
            "home": home if home not in ("~", "/", "") else None}


class Redactor:
    def __init__(self, identify: bool = True, identity: Optional[Dict[str, Optional[str]]] = None):
        self.identify = identify
        ident = identity if identity is not None else _identity()
        self._subs = []  # (compiled pattern, replacement), longest first
        if identify:
            home = ident.get("home")
            if home:
                flags = re.I if re.match(r"^[A-Za-z]:", home) else 0  # Windows paths ignore case
                self._subs.append((re.compile(re.escape(home.rstrip("/\\")) + r"(?=$|[/\\])", flags), "~"))
            host = ident.get("hostname")
            if host and len(host) >= 2 and host.lower() not in _GENERIC_NAMES:
                self._subs.append((re.compile(r"(?<![\w-])" + re.escape(host) + r"(?![\w-])"),
                                   "host-" + short_hash(host.lower())))
                short = host.split(".")[0]  # the FQDN's first label alone identifies the machine too
                if short != host and len(short) >= 2 and short.lower() not in _GENERIC_NAMES:
                    self._subs.append((re.compile(r"(?<![\w-])" + re.escape(short) + r"(?![\w.-])"),
                                       "host-" + short_hash(short.lower())))
            user = ident.get("user")
            if user and len(user) >= 2 and user.lower() not in _GENERIC_NAMES:
                self._subs.append((re.compile(r"(?<![\w-])" + re.escape(user) + r"(?![\w-])"),
                                   "user-" + short_hash(user.lower())))

    def text(self, value: str, key: str = "") -> str:
        if _SECRET_KEY.search(key or "") and value:
            return SECRET_MARK
        # Only the secret-looking spans go, so a long text (the env Markdown) keeps the rest.
        for pattern in _TOKEN_PATTERNS:
            value = pattern.sub(SECRET_MARK, value)
        value = _ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + SECRET_MARK, value)
        value = _URL_CREDENTIALS.sub(r"\1[redacted]@", value)
        value = _GPU_UUID.sub("[GPU UUID removed]", value)
        for pattern, repl in self._subs:
            value = pattern.sub(repl, value)
        if self.identify:
            value = _HOME_OWNER.sub(lambda m: m.group(1) + "user-" + short_hash(m.group(2).lower()), value)
        return value

    def __call__(self, obj: Any, key: str = "") -> Any:
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self(v, k if isinstance(k, str) else "")
                    for k, v in obj.items() if not (isinstance(k, str) and k.lower() in _DROP_KEYS)}
        if isinstance(obj, (list, tuple)):
            return [self(v, key) for v in obj]
        if isinstance(obj, str):
            return self.text(obj, key)
        return obj


def redact(report: Any, identify: bool = True, identity: Optional[Dict[str, Optional[str]]] = None) -> Any:
    """A redacted copy of any JSON-like value (the report, an env summary)."""
    return Redactor(identify, identity)(report)


def allowlisted_env(environ: Dict[str, str], names: Iterable[str], prefixes: Iterable[str] = ()) -> Dict[str, str]:
    """Only the named variables (and those with the given prefixes), secret-looking values masked."""
    names = set(names)
    prefixes = tuple(prefixes)
    out = {}
    for k in sorted(environ):
        if k in names or (prefixes and k.startswith(prefixes)):
            v = environ[k]
            out[k] = SECRET_MARK if (looks_secret(v, strict=True) or _SECRET_KEY.search(k)) else v
    return out
