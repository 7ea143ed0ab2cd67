"""Reading a configuration file: typed values by dotted key, every problem collected.

``Reader`` reads typed values out of the nested tables and collects every problem by its
dotted key (and every risky but allowed setting as a warning), so an admin fixes the whole
file in one go. The example file's placeholder values are refused, and secrets are never
inline: each password comes from a file (``password_file``) or an environment variable
(``password_env``). The checks of single values live here too.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from secir_bot import redact, validate

T = TypeVar("T")

PLACEHOLDER = "CHANGE-ME"
# RFC 2606 documentation domains: the example file uses them, a real list never does.
DOC_DOMAIN = re.compile(r"(^|[./@:])example\.(org|com|net)\b", re.IGNORECASE)
SECURITY_MODES = ("tls", "starttls", "plain")


@dataclass(frozen=True)
class Secret:
    """Where a password lives: a file or an environment variable, never the config."""

    file: Path | None = None
    env: str | None = None

    def read(self) -> str:
        """The password, registered with ``redact`` so that no log line can show it."""
        if self.file is not None:
            return redact.secret(self.file.read_text(encoding="utf-8").strip())
        if self.env is not None:
            return redact.secret(os.environ[self.env])
        return ""

    @property
    def configured(self) -> bool:
        return self.file is not None or self.env is not None


class Reader:
    """Reads typed values out of nested tables, collecting problems by dotted key."""

    def __init__(self, data: dict[str, Any], base: Path) -> None:
        self.data = data
        self.base = base
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.read: set[str] = set()  # every key looked up, to report unknown ones

    def _get(self, key: str) -> tuple[bool, Any]:
        self.read.add(key)
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def value(
        self,
        key: str,
        kind: type[T],
        default: T | None = None,
        *,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        found, raw = self._get(key)
        if not found:
            if default is None:
                self.problems.append(f"{key}: missing (required)")
                return kind()
            return default
        ok = isinstance(raw, kind) and not (kind in (int, float) and isinstance(raw, bool))
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            raw, ok = float(raw), True
        if not ok:
            self.problems.append(f"{key}: expected {kind.__name__}, got {type(raw).__name__}")
            return kind() if default is None else default
        if isinstance(raw, str) and (PLACEHOLDER in raw or DOC_DOMAIN.search(raw)):
            self.problems.append(f"{key}: still the example's placeholder value {raw!r}")
        elif check is not None and (why := check(raw)) is not None:
            self.problems.append(f"{key}: {why}")
        return raw  # type: ignore[no-any-return]

    def secret(self, key: str, *, required: bool = True) -> Secret:
        found_file, file = self._get(f"{key}_file")
        found_env, env = self._get(f"{key}_env")
        found_inline, _ = self._get(key)
        if found_inline:
            self.problems.append(
                f"{key}: passwords are never written in the config; "
                f"use {key.rsplit('.', 1)[-1]}_file or {key.rsplit('.', 1)[-1]}_env"
            )
        if found_file and found_env:
            self.problems.append(f"{key}_file / {key}_env: give one of them, not both")
        if found_file:
            if not isinstance(file, str) or PLACEHOLDER in file or check_path(file):
                self.problems.append(f"{key}_file: give the path of a file holding the password")
                return Secret()
            path = (self.base / file).resolve()
            if not path.is_file():
                self.problems.append(f"{key}_file: no such file: {file}")
            elif why := readable_by_others(path):
                self.warnings.append(
                    f"{key}_file: {file} {why}; chmod 600 it (or 640 with a group of its own)"
                )
            return Secret(file=path)
        if found_env:
            if not isinstance(env, str) or not env or PLACEHOLDER in env:
                self.problems.append(f"{key}_env: give the name of an environment variable")
                return Secret()
            if env not in os.environ:
                self.problems.append(f"{key}_env: environment variable {env} is not set")
            return Secret(env=env)
        if required:
            self.problems.append(f"{key}_file or {key}_env: missing (required)")
        return Secret()

    def ca_file(self, key: str) -> Path | None:
        """An optional PEM file of CA certificates, checked by loading it."""
        name = self.value(key, str, "", check=check_path)
        if not name or check_path(name):
            return None
        path = (self.base / name).resolve()
        try:
            ssl.create_default_context(cafile=str(path))
        except FileNotFoundError:
            self.problems.append(f"{key}: no such file: {name}")
        except (OSError, ssl.SSLError):
            self.problems.append(f"{key}: {name} holds no PEM certificate OpenSSL can read")
        return path


def readable_by_others(path: Path) -> str | None:
    """Why other accounts can read ``path``, or None.

    A group-readable file is fine when the group is the bot's own (the admin manual's
    layout: owner root, group of the service user, mode 0640).
    """
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o004:
        return f"is readable by every user (mode {mode:04o})"
    if mode & 0o040 and st.st_gid != os.getegid():
        return f"is readable by the members of group {st.st_gid} (mode {mode:04o})"
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (traffic to it never leaves the host)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


check_email = validate.problem(validate.email)


def check_path(value: str) -> str | None:
    """A file or directory name the system can take (it cannot hold a NUL character)."""
    return "must not contain a NUL character" if "\0" in value else None


def check_positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def check_not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def check_port(value: int) -> str | None:
    return None if 0 < value < 65536 else "not a TCP port"


def check_security(value: str) -> str | None:
    return None if value in SECURITY_MODES else f"must be one of {', '.join(SECURITY_MODES)}"


def check_imap_security(value: str) -> str | None:
    # aioimaplib has no STARTTLS; implicit TLS (port 993) is the norm for IMAP anyway.
    return None if value in ("tls", "plain") else "must be tls or plain"


check_mxid = validate.problem(validate.matrix_user_id)
check_room = validate.problem(validate.room_id)


def check_master_key(value: str) -> str | None:
    return None if value in ("recovery-file", "store") else "must be recovery-file or store"


def check_unsigned_devices(value: str) -> str | None:
    choices = ("trust-on-first-use", "refuse")
    return None if value in choices else "must be trust-on-first-use or refuse"


def check_url(value: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", value) else "not an http(s) URL"


def optional(value: str, validator: Callable[[str], object]) -> str | None:
    return None if not value else validate.problem(validator)(value)
