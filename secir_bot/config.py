"""Configuration: one TOML file -> frozen dataclasses, validated once.

Every problem is collected and reported by its dotted key, so an admin fixes the whole
file in one go. The example file's placeholder values are refused, and secrets are never
inline: each password comes from a file (``password_file``) or an environment variable
(``password_env``).

Some settings are allowed but risky (plain IMAP or SMTP to another host, an ``http://``
homeserver that is not on this machine, a password file other users can read): they are
collected in ``Config.warnings``, which ``check-config``, ``doctor`` and ``run`` show.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from secir_bot import redact, validate
from secir_bot.errors import ConfigError

T = TypeVar("T")

PLACEHOLDER = "CHANGE-ME"
# RFC 2606 documentation domains: the example file uses them, a real list never does.
_DOC_DOMAIN = re.compile(r"(^|[./@:])example\.(org|com|net)\b", re.IGNORECASE)
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


@dataclass(frozen=True)
class ListConfig:
    name: str
    address: str
    list_id: str
    owner: str
    subject_tag: str
    echo_to_sender: bool
    max_message_bytes: int
    max_signature_age_days: float
    max_clock_skew: float = 600.0  # seconds a signature may be dated in the future

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


@dataclass(frozen=True)
class MatrixConfig:
    homeserver: str
    user_id: str
    password: Secret
    device_name: str
    incident_room: str
    control_room: str
    admins: tuple[str, ...]
    undecryptable_report_after: float
    master_key: str = "recovery-file"  # where the cross-signing master key goes
    unsigned_devices: str = "trust-on-first-use"  # members without cross-signing
    max_parked: int = 1000  # undecryptable events kept waiting for their keys


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    security: str
    username: str
    password: Secret
    mailbox: str
    processed_folder: str
    quarantine_folder: str
    poll_interval: float
    idle_timeout: float
    ca_file: Path | None = None


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str
    username: str | None
    password: Secret
    max_recipients: int
    timeout: float
    ca_file: Path | None = None
    connections: int = 1  # SMTP connections one delivery may use at once
    pipelining: bool = True  # pipeline MAIL and RCPT when the server offers PIPELINING


@dataclass(frozen=True)
class DeliveryConfig:
    retry_base: float
    retry_max: float
    give_up_after: float
    outage_notice_after: float = 300.0
    encrypt_group_size: int = 100  # list mail: recipients per ciphertext (crypto.groups)


@dataclass(frozen=True)
class CryptoConfig:
    """How list mail is signed and encrypted (crypto.backend, crypto.groups)."""

    backend: str = "gpg"  # "gpg" (default, the reference) or "sequoia"
    hide_recipients: bool = True  # gpg's --throw-keyids; Sequoia cannot


@dataclass(frozen=True)
class CommandsConfig:
    """The command machinery and the subscription procedure (see commands/, cases.py)."""

    request_address: str = ""  # "" = <list local part>+request@<list domain>
    confirm_ttl: float = 300.0
    case_expiry_days: float = 30.0
    admin_power_level: int = 100
    keyring: Path | None = None  # an admin-provided GnuPG home to fetch keys by fingerprint


@dataclass(frozen=True)
class WhoisConfig:
    host: str = "whois.iana.org"
    port: int = 43
    timeout: float = 15.0


@dataclass(frozen=True)
class Config:
    path: Path
    store_path: Path
    list: ListConfig
    matrix: MatrixConfig
    imap: ImapConfig
    smtp: SmtpConfig
    delivery: DeliveryConfig
    warnings: tuple[str, ...] = ()
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    whois: WhoisConfig = field(default_factory=WhoisConfig)
    crypto: CryptoConfig = field(default_factory=CryptoConfig)


class _Reader:
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
        if isinstance(raw, str) and (PLACEHOLDER in raw or _DOC_DOMAIN.search(raw)):
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
            if not isinstance(file, str) or PLACEHOLDER in file:
                self.problems.append(f"{key}_file: give the path of a file holding the password")
                return Secret()
            path = (self.base / file).resolve()
            if not path.is_file():
                self.problems.append(f"{key}_file: no such file: {file}")
            elif why := _readable_by_others(path):
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
        name = self.value(key, str, "")
        if not name:
            return None
        path = (self.base / name).resolve()
        try:
            ssl.create_default_context(cafile=str(path))
        except FileNotFoundError:
            self.problems.append(f"{key}: no such file: {name}")
        except (OSError, ssl.SSLError):
            self.problems.append(f"{key}: {name} holds no PEM certificate OpenSSL can read")
        return path


def _readable_by_others(path: Path) -> str | None:
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


_email = validate.problem(validate.email)


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else "not a TCP port"


def _security(value: str) -> str | None:
    return None if value in SECURITY_MODES else f"must be one of {', '.join(SECURITY_MODES)}"


def _imap_security(value: str) -> str | None:
    # aioimaplib has no STARTTLS; implicit TLS (port 993) is the norm for IMAP anyway.
    return None if value in ("tls", "plain") else "must be tls or plain"


_mxid = validate.problem(validate.matrix_user_id)
_room = validate.problem(validate.room_id)


def _master_key(value: str) -> str | None:
    return None if value in ("recovery-file", "store") else "must be recovery-file or store"


def _unsigned_devices(value: str) -> str | None:
    choices = ("trust-on-first-use", "refuse")
    return None if value in choices else "must be trust-on-first-use or refuse"


def _url(value: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", value) else "not an http(s) URL"


def parse(data: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; raise ``ConfigError`` listing every problem."""
    r = _Reader(data, path.parent)
    known = {"store", "list", "matrix", "imap", "smtp", "delivery", "commands", "whois", "crypto"}
    r.problems.extend(f"{k}: unknown section" for k in data if k not in known)

    store = r.value("store.path", str, "store")
    lst = ListConfig(
        name=r.value("list.name", str, "SECIR"),
        address=r.value("list.address", str, check=_email),
        list_id=r.value("list.list_id", str),
        owner=r.value("list.owner", str, check=_email),
        subject_tag=r.value("list.subject_tag", str, "SECIR"),
        echo_to_sender=r.value("list.echo_to_sender", bool, False),
        max_message_bytes=r.value("list.max_message_bytes", int, 2_000_000, check=_positive),
        max_signature_age_days=r.value("list.max_signature_age_days", float, 7.0, check=_positive),
        max_clock_skew=r.value("list.max_clock_skew", float, 600.0, check=_not_negative),
    )
    admins = r.value("matrix.admins", list, [])
    for i, admin in enumerate(admins):
        if not isinstance(admin, str) or _mxid(admin):
            r.problems.append(f"matrix.admins[{i}]: not a Matrix user id: {admin!r}")
        elif PLACEHOLDER in admin or _DOC_DOMAIN.search(admin):
            r.problems.append(f"matrix.admins[{i}]: still the example's placeholder {admin!r}")
    if not admins:
        r.problems.append("matrix.admins: name at least one admin")
    mx = MatrixConfig(
        homeserver=r.value("matrix.homeserver", str, check=_url),
        user_id=r.value("matrix.user_id", str, check=_mxid),
        password=r.secret("matrix.password", required=False),
        device_name=r.value("matrix.device_name", str, "secir-bot"),
        incident_room=r.value("matrix.incident_room", str, check=_room),
        control_room=r.value("matrix.control_room", str, check=_room),
        admins=tuple(a for a in admins if isinstance(a, str)),
        undecryptable_report_after=r.value(
            "matrix.undecryptable_report_after", float, 300.0, check=_positive
        ),
        master_key=r.value("matrix.master_key", str, "recovery-file", check=_master_key),
        unsigned_devices=r.value(
            "matrix.unsigned_devices", str, "trust-on-first-use", check=_unsigned_devices
        ),
        max_parked=r.value("matrix.max_parked", int, 1000, check=_positive),
    )
    if mx.incident_room and mx.incident_room == mx.control_room:
        r.problems.append("matrix.control_room: must differ from matrix.incident_room")
    imap = ImapConfig(
        host=r.value("imap.host", str),
        port=r.value("imap.port", int, 993, check=_port),
        security=r.value("imap.security", str, "tls", check=_imap_security),
        username=r.value("imap.username", str),
        password=r.secret("imap.password"),
        mailbox=r.value("imap.mailbox", str, "INBOX"),
        processed_folder=r.value("imap.processed_folder", str, "secir-processed"),
        quarantine_folder=r.value("imap.quarantine_folder", str, "secir-quarantine"),
        poll_interval=r.value("imap.poll_interval", float, 60.0, check=_positive),
        idle_timeout=r.value("imap.idle_timeout", float, 300.0, check=_positive),
        ca_file=r.ca_file("imap.ca_file"),
    )
    smtp_user = r.value("smtp.username", str, "")
    smtp = SmtpConfig(
        host=r.value("smtp.host", str),
        port=r.value("smtp.port", int, 587, check=_port),
        security=r.value("smtp.security", str, "starttls", check=_security),
        username=smtp_user or None,
        password=r.secret("smtp.password", required=bool(smtp_user)),
        max_recipients=r.value("smtp.max_recipients", int, 100, check=_positive),
        timeout=r.value("smtp.timeout", float, 60.0, check=_positive),
        ca_file=r.ca_file("smtp.ca_file"),
        connections=r.value("smtp.connections", int, 1, check=_positive),
        pipelining=r.value("smtp.pipelining", bool, True),
    )
    delivery = DeliveryConfig(
        retry_base=r.value("delivery.retry_base", float, 5.0, check=_positive),
        retry_max=r.value("delivery.retry_max", float, 900.0, check=_positive),
        give_up_after=r.value("delivery.give_up_after", float, 86400.0, check=_positive),
        outage_notice_after=r.value("delivery.outage_notice_after", float, 300.0, check=_positive),
        encrypt_group_size=r.value("delivery.encrypt_group_size", int, 100, check=_positive),
    )
    crypto = _crypto(r)
    r.warnings.extend(_transport_warnings(mx, imap, smtp))
    commands, whois = _commands(r)
    for section, table in data.items():
        if section in known and isinstance(table, dict):
            r.problems.extend(
                f"{section}.{key}: unknown key" for key in table if f"{section}.{key}" not in r.read
            )
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        path=path,
        store_path=(path.parent / store).resolve(),
        list=lst,
        matrix=mx,
        imap=imap,
        smtp=smtp,
        delivery=delivery,
        warnings=tuple(r.warnings),
        commands=commands,
        whois=whois,
        crypto=crypto,
    )


def _crypto(r: _Reader) -> CryptoConfig:
    """The [crypto] section: which OpenPGP implementation writes list mail."""
    crypto = CryptoConfig(
        backend=r.value(
            "crypto.backend",
            str,
            "gpg",
            check=lambda v: None if v in ("gpg", "sequoia") else "must be gpg or sequoia",
        ),
        hide_recipients=r.value("crypto.hide_recipients", bool, True),
    )
    if crypto.backend == "sequoia" and crypto.hide_recipients:
        r.problems.append(
            "crypto.hide_recipients: Sequoia writes every recipient's key id into the "
            'message; with crypto.backend = "sequoia" set crypto.hide_recipients = false'
        )
    return crypto


def _transport_warnings(mx: MatrixConfig, imap: ImapConfig, smtp: SmtpConfig) -> list[str]:
    """Unencrypted links that leave this machine: allowed, but never quietly."""
    out = []
    for key, cfg in (("imap", imap), ("smtp", smtp)):
        if cfg.security == "plain" and cfg.host and not is_loopback(cfg.host):
            out.append(
                f'{key}.security: "plain" to {cfg.host} sends the password and the list\'s '
                f"mail unencrypted over the network; use TLS unless the host is this machine"
            )
    url = urlsplit(mx.homeserver)
    if url.scheme == "http" and url.hostname and not is_loopback(url.hostname):
        out.append(
            f"matrix.homeserver: {mx.homeserver} is plain http to another host: the access "
            "token and all Matrix traffic travel unencrypted; use https"
        )
    return out


def _commands(r: _Reader) -> tuple[CommandsConfig, WhoisConfig]:
    """The [commands] and [whois] sections."""
    keyring = r.value("commands.keyring", str, "")
    commands = CommandsConfig(
        request_address=r.value(
            "commands.request_address", str, "", check=lambda v: _optional(v, validate.email)
        ),
        confirm_ttl=r.value("commands.confirm_ttl", float, 300.0, check=_positive),
        case_expiry_days=r.value("commands.case_expiry_days", float, 30.0, check=_positive),
        admin_power_level=r.value("commands.admin_power_level", int, 100, check=_positive),
        keyring=(r.base / keyring).resolve() if keyring else None,
    )
    whois = WhoisConfig(
        host=r.value("whois.host", str, "whois.iana.org"),
        port=r.value("whois.port", int, 43, check=_port),
        timeout=r.value("whois.timeout", float, 15.0, check=_positive),
    )
    return commands, whois


def _optional(value: str, validator: Callable[[str], object]) -> str | None:
    return None if not value else validate.problem(validator)(value)


def load(path: Path) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    return parse(data, path.resolve())
