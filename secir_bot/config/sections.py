"""The sections of the configuration file: one frozen dataclass and one reader each.

A reader takes the ``Reader`` and returns its section, having noted every problem (and
every risky setting) by dotted key; ``config.parse`` calls them in the file's order. A new
section is a dataclass and a reader here, and one line in ``parse``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from secir_bot import validate
from secir_bot.config.base import (
    DOC_DOMAIN,
    PLACEHOLDER,
    Reader,
    Secret,
    check_email,
    check_imap_security,
    check_master_key,
    check_mxid,
    check_not_negative,
    check_path,
    check_port,
    check_positive,
    check_room,
    check_security,
    check_unsigned_devices,
    check_url,
    is_loopback,
    optional,
)
from secir_bot.fidelity.attachments import AttachmentLimits


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
    html_alternative: bool = False  # room posts by mail with an HTML part beside the text
    attachments: AttachmentLimits = field(default_factory=AttachmentLimits)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


_DEFAULT_LIMITS = AttachmentLimits()


def _check_types(value: list[object]) -> str | None:
    """MIME type patterns: ``type/subtype``, ``type/*`` or ``*/*``."""
    bad = [v for v in value if not isinstance(v, str) or v.count("/") != 1 or not v.isascii()]
    return f"not MIME types: {bad!r}" if bad else None


def _read_attachments(r: Reader) -> AttachmentLimits:
    blocked = r.value(
        "list.blocked_types", list, list(_DEFAULT_LIMITS.blocked_types), check=_check_types
    )
    return AttachmentLimits(
        max_bytes=r.value(
            "list.max_attachment_bytes", int, _DEFAULT_LIMITS.max_bytes, check=check_positive
        ),
        max_total_bytes=r.value(
            "list.max_attachments_bytes",
            int,
            _DEFAULT_LIMITS.max_total_bytes,
            check=check_positive,
        ),
        blocked_types=tuple(str(t).lower() for t in blocked),
    )


def read_list(r: Reader) -> ListConfig:
    return ListConfig(
        name=r.value("list.name", str, "SECIR"),
        address=r.value("list.address", str, check=check_email),
        list_id=r.value("list.list_id", str),
        owner=r.value("list.owner", str, check=check_email),
        subject_tag=r.value("list.subject_tag", str, "SECIR"),
        echo_to_sender=r.value("list.echo_to_sender", bool, False),
        max_message_bytes=r.value("list.max_message_bytes", int, 2_000_000, check=check_positive),
        max_signature_age_days=r.value(
            "list.max_signature_age_days", float, 7.0, check=check_positive
        ),
        max_clock_skew=r.value("list.max_clock_skew", float, 600.0, check=check_not_negative),
        html_alternative=r.value("list.html_alternative", bool, False),
        attachments=_read_attachments(r),
    )


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
    caption_wait_seconds: float = 20.0  # a caption-less file waits this long for its text


def read_matrix(r: Reader) -> MatrixConfig:
    admins = r.value("matrix.admins", list, [])
    for i, admin in enumerate(admins):
        if not isinstance(admin, str) or check_mxid(admin):
            r.problems.append(f"matrix.admins[{i}]: not a Matrix user id: {admin!r}")
        elif PLACEHOLDER in admin or DOC_DOMAIN.search(admin):
            r.problems.append(f"matrix.admins[{i}]: still the example's placeholder {admin!r}")
    if not admins:
        r.problems.append("matrix.admins: name at least one admin")
    mx = MatrixConfig(
        homeserver=r.value("matrix.homeserver", str, check=check_url),
        user_id=r.value("matrix.user_id", str, check=check_mxid),
        password=r.secret("matrix.password", required=False),
        device_name=r.value("matrix.device_name", str, "secir-bot"),
        incident_room=r.value("matrix.incident_room", str, check=check_room),
        control_room=r.value("matrix.control_room", str, check=check_room),
        admins=tuple(a for a in admins if isinstance(a, str)),
        undecryptable_report_after=r.value(
            "matrix.undecryptable_report_after", float, 300.0, check=check_positive
        ),
        master_key=r.value("matrix.master_key", str, "recovery-file", check=check_master_key),
        unsigned_devices=r.value(
            "matrix.unsigned_devices", str, "trust-on-first-use", check=check_unsigned_devices
        ),
        max_parked=r.value("matrix.max_parked", int, 1000, check=check_positive),
        caption_wait_seconds=r.value(
            "matrix.caption_wait_seconds", float, 20.0, check=check_not_negative
        ),
    )
    if mx.incident_room and mx.incident_room == mx.control_room:
        r.problems.append("matrix.control_room: must differ from matrix.incident_room")
    return mx


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
    parallel_decisions: int = 4  # mails decided at once (each thread and sender in order)


def read_imap(r: Reader) -> ImapConfig:
    return ImapConfig(
        host=r.value("imap.host", str),
        port=r.value("imap.port", int, 993, check=check_port),
        security=r.value("imap.security", str, "tls", check=check_imap_security),
        username=r.value("imap.username", str),
        password=r.secret("imap.password"),
        mailbox=r.value("imap.mailbox", str, "INBOX"),
        processed_folder=r.value("imap.processed_folder", str, "secir-processed"),
        quarantine_folder=r.value("imap.quarantine_folder", str, "secir-quarantine"),
        poll_interval=r.value("imap.poll_interval", float, 60.0, check=check_positive),
        idle_timeout=r.value("imap.idle_timeout", float, 300.0, check=check_positive),
        ca_file=r.ca_file("imap.ca_file"),
        parallel_decisions=r.value("imap.parallel_decisions", int, 4, check=check_positive),
    )


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
    keep_open: float = 30.0  # seconds an idle session is kept for the next delivery


def read_smtp(r: Reader) -> SmtpConfig:
    user = r.value("smtp.username", str, "")
    return SmtpConfig(
        host=r.value("smtp.host", str),
        port=r.value("smtp.port", int, 587, check=check_port),
        security=r.value("smtp.security", str, "starttls", check=check_security),
        username=user or None,
        password=r.secret("smtp.password", required=bool(user)),
        max_recipients=r.value("smtp.max_recipients", int, 100, check=check_positive),
        timeout=r.value("smtp.timeout", float, 60.0, check=check_positive),
        ca_file=r.ca_file("smtp.ca_file"),
        connections=r.value("smtp.connections", int, 1, check=check_positive),
        pipelining=r.value("smtp.pipelining", bool, True),
        keep_open=r.value("smtp.keep_open", float, 30.0, check=check_not_negative),
    )


def transport_warnings(mx: MatrixConfig, imap: ImapConfig, smtp: SmtpConfig) -> list[str]:
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


@dataclass(frozen=True)
class DeliveryConfig:
    retry_base: float
    retry_max: float
    give_up_after: float
    outage_notice_after: float = 300.0
    # Notices to the admins about one sender, and answers to one member, per hour; the rest
    # are counted and summed up in the next one (forged or looping mail cannot flood).
    notices_per_hour: int = 5
    encrypt_group_size: int = 100  # list mail: recipients per ciphertext (crypto.groups)
    # Room events sent at once (each thread, post and author in order; outbox.matrix_keys).
    matrix_parallel: int = 8


def read_delivery(r: Reader) -> DeliveryConfig:
    return DeliveryConfig(
        retry_base=r.value("delivery.retry_base", float, 5.0, check=check_positive),
        retry_max=r.value("delivery.retry_max", float, 900.0, check=check_positive),
        give_up_after=r.value("delivery.give_up_after", float, 86400.0, check=check_positive),
        outage_notice_after=r.value(
            "delivery.outage_notice_after", float, 300.0, check=check_positive
        ),
        notices_per_hour=r.value("delivery.notices_per_hour", int, 5, check=check_positive),
        encrypt_group_size=r.value("delivery.encrypt_group_size", int, 100, check=check_positive),
        matrix_parallel=r.value("delivery.matrix_parallel", int, 8, check=check_positive),
    )


@dataclass(frozen=True)
class CryptoConfig:
    """How list mail is signed and encrypted (crypto.backend, crypto.groups)."""

    backend: str = "gpg"  # "gpg" (default, the reference) or "sequoia"
    hide_recipients: bool = True  # wildcard key ids (gpg's --throw-keyids), both backends


def read_crypto(r: Reader) -> CryptoConfig:
    """The [crypto] section: which OpenPGP implementation writes list mail."""
    return CryptoConfig(
        backend=r.value(
            "crypto.backend",
            str,
            "gpg",
            check=lambda v: None if v in ("gpg", "sequoia") else "must be gpg or sequoia",
        ),
        hide_recipients=r.value("crypto.hide_recipients", bool, True),
    )


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


def read_commands(r: Reader) -> tuple[CommandsConfig, WhoisConfig]:
    """The [commands] and [whois] sections."""
    keyring = r.value("commands.keyring", str, "", check=check_path)
    commands = CommandsConfig(
        request_address=r.value(
            "commands.request_address", str, "", check=lambda v: optional(v, validate.email)
        ),
        confirm_ttl=r.value("commands.confirm_ttl", float, 300.0, check=check_positive),
        case_expiry_days=r.value("commands.case_expiry_days", float, 30.0, check=check_positive),
        admin_power_level=r.value("commands.admin_power_level", int, 100, check=check_positive),
        keyring=(r.base / keyring).resolve() if keyring and not check_path(keyring) else None,
    )
    whois = WhoisConfig(
        host=r.value("whois.host", str, "whois.iana.org"),
        port=r.value("whois.port", int, 43, check=check_port),
        timeout=r.value("whois.timeout", float, 15.0, check=check_positive),
    )
    return commands, whois
