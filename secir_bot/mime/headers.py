"""Reading headers of received mail: ids, addresses, decoded values, machine-made mail.

Nothing here re-serialises a message; values are read from the bytes as received. The
parsing bounds (parts, nesting) are checked before and after the ``email`` package parses.
"""

from __future__ import annotations

import email
import email.header
import email.parser
import email.policy
import hashlib
import re
from email.message import Message
from email.utils import getaddresses, parseaddr

_MSGID = re.compile(r"<[^<>\s]+>")
MAX_MESSAGE_ID = 500  # characters; a longer one is replaced by the digest
# Bounds on the MIME structure, checked before the email package parses a mail: its parser
# recurses per nesting level (a thousand levels raise RecursionError) and is slow on many
# parts. Real mail to the list has a handful of parts.
MAX_MIME_PARTS = 100
MAX_MIME_DEPTH = 12
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:", re.IGNORECASE | re.MULTILINE)
_AUTOMATED_PRECEDENCE = {"bulk", "junk", "auto_reply"}


class MalformedMail(ValueError):
    """The bytes are not a mail we can read."""


def headers_only(raw: bytes) -> Message:
    """The header of ``raw`` without looking at the body (no MIME recursion, ever)."""
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)


def message_id_of(raw: bytes) -> str:
    """The Message-ID of ``raw``, or a digest of the bytes when it has none.

    This runs before a received mail is stored, so it never raises, whatever the bytes.
    """
    try:
        found = _MSGID.findall(str(headers_only(raw).get("Message-ID", "")))
    except Exception:  # unreadable headers: the digest still names the mail
        found = []
    if found and len(found[0]) <= MAX_MESSAGE_ID:
        return str(found[0])
    return "<sha256-" + hashlib.sha256(raw).hexdigest() + "@no-id>"


def from_address(raw: bytes) -> str:
    """The From address of ``raw`` as best as can be read ("" when there is none)."""
    try:
        return sender(headers_only(raw))[1].lower()
    except Exception:  # a last-chance reading of broken input; nothing depends on it
        return ""


def ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


def decode(value: str) -> str:
    """Unfold and decode RFC 2047 encoded-words."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (UnicodeDecodeError, LookupError, email.errors.HeaderParseError):
        return value


def raw_header(msg: Message, name: str) -> str | None:
    """A header's value as received, with raw 8-bit bytes read as text.

    Some clients write a protected Subject (or a display name) as raw UTF-8 instead of
    encoded-words; the email package would show those bytes as replacement characters. They
    are decoded as UTF-8, or as Windows-1252 when they are not UTF-8 (older clients)."""
    wanted = name.lower()
    value = next((v for k, v in msg.raw_items() if k.lower() == wanted), None)
    if value is None or value.isascii():
        return value
    data = str(value).encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def header(msg: Message, name: str) -> str:
    value = raw_header(msg, name)
    return "" if value is None else decode(value)


def sender(msg: Message) -> tuple[str, str]:
    """(display name, address) of From: the address is read *before* decoding, so that a
    comma or parenthesis inside an encoded display name cannot change it."""
    name, addr = parseaddr(re.sub(r"\r?\n(?=[ \t])", "", raw_header(msg, "From") or ""))
    return decode(name), addr


def automated(msg: Message, from_addr: str) -> str | None:
    """RFC 3834 and bounce checks: never redistribute machine-made mail."""
    auto = header(msg, "Auto-Submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return f"auto-submitted mail ({auto})"
    if msg.get_content_type() == "multipart/report":
        return "delivery or disposition report (bounce)"
    local = from_addr.split("@", 1)[0].lower()
    if local in ("mailer-daemon", "postmaster") or not from_addr:
        return "mail from a mailer daemon (bounce)"
    if header(msg, "Precedence").strip().lower() in _AUTOMATED_PRECEDENCE:
        return f"precedence {header(msg, 'Precedence').strip().lower()} (automated mail)"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply"):
        if msg.get(name) is not None:
            return f"auto-reply ({name})"
    return None


def payload_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def parse_bounded(raw: bytes) -> Message:
    """Parse within bounds: too many parts are refused before parsing, too deep a
    nesting after it (``MalformedMail`` with a fixed reason)."""
    if len(_CONTENT_TYPE.findall(raw)) > MAX_MIME_PARTS:
        raise MalformedMail(f"more than {MAX_MIME_PARTS} MIME parts")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    stack = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_MIME_DEPTH:
            raise MalformedMail(f"MIME parts nested more than {MAX_MIME_DEPTH} deep")
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return msg


def recipients_of(header_value: str) -> list[str]:
    return [addr.lower() for _, addr in getaddresses([header_value]) if addr]


OUTER_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To")


def outer_recipients(raw: bytes, names: tuple[str, ...] = OUTER_RECIPIENT_HEADERS) -> list[str]:
    """The addresses in the unprotected recipient headers ``names`` of ``raw`` (never
    raises). Anyone can write these: they may route a mail, never authorise anything."""
    try:
        msg = headers_only(raw)
        values = [str(v) for name in names for v in (msg.get_all(name) or [])]
    except Exception:  # unreadable headers: no recipients to route by
        return []
    return recipients_of(", ".join(values)) if values else []
