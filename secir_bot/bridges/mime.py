"""MIME for the list: parse what members send, compose what the list sends.

Inbound mail is only *read* with Python's ``email`` package; the bytes that a signature
covers are cut out of the original text, never re-serialised (re-serialising can change
line endings, header folding or transfer encodings and break the signature).

Composing what the list sends lives in ``compose`` (re-exported here).
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import hashlib
import itertools
import re
from dataclasses import dataclass, field, replace
from email.message import Message
from email.utils import getaddresses, parseaddr

from selectolax.lexbor import LexborHTMLParser

from secir_bot.bridges.compose import (
    LOOP_HEADER,
    ListHeaders,
    compose_inner,
    compose_outer,
    make_pgp_mime,
    neutral,
)

ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
ARMOR_END = b"-----END PGP MESSAGE-----"
CLEARSIGN_BEGIN = "-----BEGIN PGP SIGNED MESSAGE-----"
_MSGID = re.compile(r"<[^<>\s]+>")
MAX_MESSAGE_ID = 500  # characters; a longer one is replaced by the digest
# Bounds on the MIME structure, checked before the email package parses a mail: its parser
# recurses per nesting level (a thousand levels raise RecursionError) and is slow on many
# parts. Real mail to the list has a handful of parts.
MAX_MIME_PARTS = 100
MAX_MIME_DEPTH = 12
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:", re.IGNORECASE | re.MULTILINE)
_AUTOMATED_PRECEDENCE = {"bulk", "junk", "auto_reply"}


__all__ = [
    "LOOP_HEADER",
    "Content",
    "Envelope",
    "ListHeaders",
    "MalformedMail",
    "compose_inner",
    "compose_outer",
    "make_pgp_mime",
    "neutral",
]


class MalformedMail(ValueError):
    """The bytes are not a mail we can read."""


@dataclass(frozen=True)
class Envelope:
    """Everything readable before decryption."""

    message_id: str | None
    from_addr: str
    from_name: str
    subject: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    list_id: str | None
    loop_marker: str | None
    automated: str | None  # why this is an auto-reply or bounce, if it is one
    kind: str  # "pgp-mime", "inline", "signed-only", "plain"
    ciphertext: bytes | None

    @property
    def source_id(self) -> str:
        """A stable key for de-duplication (the Message-ID; a hash when there is none)."""
        assert self.message_id is not None
        return self.message_id


@dataclass(frozen=True)
class Content:
    """The readable content of a decrypted message."""

    subject: str | None  # the signed (protected) Subject, if the signed content has one
    text: str
    attachments: tuple[str, ...] = field(default=())
    signed_part: bytes | None = None  # exact bytes covered by a detached signature
    signature: bytes | None = None
    # From the signed headers only: the To and Cc addresses (None when the signed content
    # names no recipient at all), and the thread headers (``threaded`` when it has any).
    recipients: tuple[str, ...] | None = None
    from_addr: str | None = None  # the signed From address, if the signed content has one
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    threaded: bool = False
    html: tuple[str, ...] = ()  # HTML parts of a mail without plain text, not yet converted


def _headers_only(raw: bytes) -> Message:
    """The header of ``raw`` without looking at the body (no MIME recursion, ever)."""
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)


def message_id_of(raw: bytes) -> str:
    """The Message-ID of ``raw``, or a digest of the bytes when it has none.

    This runs before a received mail is stored, so it never raises, whatever the bytes.
    """
    try:
        found = _MSGID.findall(str(_headers_only(raw).get("Message-ID", "")))
    except Exception:  # unreadable headers: the digest still names the mail
        found = []
    if found and len(found[0]) <= MAX_MESSAGE_ID:
        return str(found[0])
    return "<sha256-" + hashlib.sha256(raw).hexdigest() + "@no-id>"


def from_address(raw: bytes) -> str:
    """The From address of ``raw`` as best as can be read ("" when there is none)."""
    try:
        return _sender(_headers_only(raw))[1].lower()
    except Exception:  # a last-chance reading of broken input; nothing depends on it
        return ""


def _ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


def _decode(value: str) -> str:
    """Unfold and decode RFC 2047 encoded-words."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (UnicodeDecodeError, LookupError, email.errors.HeaderParseError):
        return value


def _raw(msg: Message, name: str) -> str | None:
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


def _header(msg: Message, name: str) -> str:
    value = _raw(msg, name)
    return "" if value is None else _decode(value)


def _sender(msg: Message) -> tuple[str, str]:
    """(display name, address) of From: the address is read *before* decoding, so that a
    comma or parenthesis inside an encoded display name cannot change it."""
    name, addr = parseaddr(re.sub(r"\r?\n(?=[ \t])", "", _raw(msg, "From") or ""))
    return _decode(name), addr


def _automated(msg: Message, from_addr: str) -> str | None:
    """RFC 3834 and bounce checks: never redistribute machine-made mail."""
    auto = _header(msg, "Auto-Submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return f"auto-submitted mail ({auto})"
    if msg.get_content_type() == "multipart/report":
        return "delivery or disposition report (bounce)"
    local = from_addr.split("@", 1)[0].lower()
    if local in ("mailer-daemon", "postmaster") or not from_addr:
        return "mail from a mailer daemon (bounce)"
    if _header(msg, "Precedence").strip().lower() in _AUTOMATED_PRECEDENCE:
        return f"precedence {_header(msg, 'Precedence').strip().lower()} (automated mail)"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply"):
        if msg.get(name) is not None:
            return f"auto-reply ({name})"
    return None


def _payload_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def parse_envelope(raw: bytes) -> Envelope:
    """Read the cleartext facts of a received mail; ``MalformedMail`` (with a fixed reason)
    is the only exception, whatever the bytes."""
    try:
        return _parse_envelope(raw)
    except MalformedMail:
        raise
    except Exception:  # the parser's own errors quote the input: keep them out of reasons
        raise MalformedMail("unparseable message") from None


def _parse(raw: bytes) -> Message:
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


def _parse_envelope(raw: bytes) -> Envelope:
    if not raw.strip():
        raise MalformedMail("empty message")
    msg = _parse(raw)
    if not msg.keys():
        raise MalformedMail("no headers")
    name, addr = _sender(msg)
    ctype = msg.get_content_type()
    kind, cipher = "plain", None
    if ctype == "multipart/encrypted":
        payload = msg.get_payload()
        parts = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
        if len(parts) != 2:
            raise MalformedMail("multipart/encrypted without its two parts")
        if parts[0].get_content_type() != "application/pgp-encrypted":
            raise MalformedMail("multipart/encrypted that is not PGP/MIME")
        kind, cipher = "pgp-mime", _payload_bytes(parts[1])
        if ARMOR_BEGIN not in cipher:
            raise MalformedMail("PGP/MIME message without an armored OpenPGP message")
    elif ctype == "multipart/signed":
        kind = "signed-only"
    else:
        kind, cipher = _inline(msg)
    return Envelope(
        message_id=message_id_of(raw),
        from_addr=addr.lower(),
        from_name=name,
        subject=_header(msg, "Subject"),
        in_reply_to=_ids(msg.get("In-Reply-To")),
        references=_ids(msg.get("References")),
        list_id=_header(msg, "List-Id") or None,
        loop_marker=_header(msg, LOOP_HEADER) or None,
        automated=_automated(msg, addr),
        kind=kind,
        ciphertext=cipher,
    )


OUTSIDE_THE_ARMOR = (
    "text or parts outside the encrypted block (they would not be relayed: send only the "
    "encrypted block)"
)


def _inline(msg: Message) -> tuple[str, bytes | None]:
    """Inline PGP: exactly one armored message, with only blank space around it and no
    other content in the mail (an HTML alternative of the same text is not read). Text
    outside the encryption is refused rather than silently left out: a reader of the mail
    would take it for part of what the list relayed."""
    kind, found, outside = "plain", None, False
    for part in msg.walk():
        if part.is_multipart() or part.get_content_type() == "text/html":
            continue
        data = _payload_bytes(part)
        start = data.find(ARMOR_BEGIN)
        end = data.find(ARMOR_END, start)
        if start >= 0 and end > start:
            if found is not None or data.count(ARMOR_BEGIN) > 1:
                raise MalformedMail("more than one encrypted block")
            if data[:start].strip() or data[end + len(ARMOR_END) :].strip():
                raise MalformedMail(OUTSIDE_THE_ARMOR)
            found = data[start : end + len(ARMOR_END)] + b"\n"
        elif CLEARSIGN_BEGIN.encode() in data:
            kind = "signed-only"
        elif data.strip():
            outside = True
    if found is None:
        return kind, None
    if outside:
        raise MalformedMail(OUTSIDE_THE_ARMOR)
    return "inline", found


def _split_multipart(raw: bytes, boundary: str) -> list[bytes]:
    """The exact bytes of each body part of a multipart entity (RFC 2046 §5.1.1)."""
    delim = re.compile(
        rb"(?:\r?\n|^)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*(?=\r?\n|$)"
    )
    header_end = re.search(rb"\r?\n\r?\n", raw)
    body_start = header_end.end() if header_end else 0
    marks = list(delim.finditer(raw, body_start - 2 if body_start >= 2 else 0))
    parts = []
    for here, nxt in itertools.pairwise(marks):
        if here.group(1):
            break
        chunk = raw[here.end() : nxt.start()]
        parts.append(chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:])
    return parts


def _text_of(part: Message) -> str:
    data = _payload_bytes(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


MAX_HTML_CHARS = 1_000_000  # HTML larger than this is not converted (the mail is refused)
_HTML_BLOCKS = "p, div, li, tr, h1, h2, h3, h4, h5, h6, pre, blockquote, table"


def html_to_text(markup: str) -> str:
    """The text of an HTML body, with selectolax (the Lexbor HTML5 parser: linear on
    hostile markup, unlike the standard library's parser, CVE-2025-6069).

    Only for HTML-only mail, and only after its signature was checked (steps.email).
    """
    if len(markup) > MAX_HTML_CHARS:
        raise MalformedMail(f"the HTML text is larger than {MAX_HTML_CHARS} characters")
    tree = LexborHTMLParser(markup)
    tree.strip_tags(["script", "style", "head", "template"])
    for node in tree.css("br"):
        node.replace_with("\n")
    for node in tree.css(_HTML_BLOCKS):
        node.insert_after("\n")
    text = (tree.body.text(separator="") if tree.body is not None else "").replace("\r\n", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _readable(msg: Message) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The message's plain text, its HTML parts when it has no plain text (converted
    later, and only once the signature is checked), and the names of what was left out."""
    plain: list[str] = []
    htmls: list[str] = []
    left_out: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if ctype == "text/rfc822-headers" and part is not msg:
            continue  # the "legacy display" part of protected headers: a copy, not content
        if ctype == "application/pgp-signature":
            continue
        if disposition == "attachment" or not ctype.startswith("text/"):
            left_out.append(part.get_filename() or ctype)
        elif ctype == "text/plain":
            plain.append(_text_of(part))
        elif ctype == "text/html":
            htmls.append(_text_of(part))
    text = "\n".join(plain).replace("\r\n", "\n").strip("\n")
    return text, (() if plain else tuple(htmls)), tuple(left_out)


def parse_decrypted(plaintext: bytes, kind: str = "pgp-mime") -> Content:
    """Read a decrypted payload: a MIME entity (PGP/MIME) or text (inline PGP).

    For inline PGP, ``plaintext`` must be what gpg wrote out as signed content (the literal
    data of a signed message, or the text of a verified clear-signed one): it is shown as
    it is, never parsed for armor again. ``MalformedMail`` (with a fixed reason) is the
    only exception, whatever the bytes.
    """
    if kind == "inline":
        return inline_content(plaintext)
    try:
        return _parse_entity(plaintext)
    except MalformedMail:
        raise
    except Exception:  # the parser's own errors may quote decrypted text
        raise MalformedMail("unparseable decrypted content") from None


def _parse_entity(plaintext: bytes) -> Content:
    msg = _parse(plaintext)
    if msg.get_content_type() == "multipart/signed":
        boundary = msg.get_boundary()
        parts = _split_multipart(plaintext, boundary) if boundary else []
        if len(parts) != 2:
            raise MalformedMail("multipart/signed without its two parts")
        inner = _parse(parts[0])
        sig = email.message_from_bytes(parts[1], policy=email.policy.compat32)
        # The text shown is read from the signed part's exact bytes only, and only the
        # signed part's own headers count: headers around it are unsigned.
        return replace(_content_of(inner), signed_part=parts[0], signature=_payload_bytes(sig))
    return _content_of(msg)


def _content_of(msg: Message) -> Content:
    """Text, attachments and the protected headers of a signed entity."""
    text, html, left_out = _readable(msg)
    to_cc = [str(v) for name in ("To", "Cc") for v in msg.get_all(name) or []]
    replies = _ids(msg.get("In-Reply-To"))
    references = _ids(msg.get("References"))
    return Content(
        subject=_header(msg, "Subject") or None,
        text=text,
        html=html,
        attachments=left_out,
        recipients=tuple(recipients_of(", ".join(to_cc))) if to_cc else None,
        from_addr=(_sender(msg)[1].lower() or None) if msg.get("From") is not None else None,
        in_reply_to=replies,
        references=references,
        threaded=msg.get("In-Reply-To") is not None or msg.get("References") is not None,
    )


def inline_content(signed_text: bytes) -> Content:
    """The content of inline PGP from the bytes gpg reported as signed.

    Trailing blanks are dropped from each line: a clear-signature does not cover them
    (RFC 4880 §7.1), so they may not be shown as the signer's.
    """
    text = signed_text.decode("utf-8", errors="replace").replace("\r\n", "\n")
    text = "\n".join(line.rstrip(" \t\r") for line in text.split("\n"))
    return Content(subject=None, text=text.strip("\n"))


NOT_ONE_CLEARSIGNED = (
    "the decrypted text is not exactly one clear-signed text (text outside it, "
    "several blocks, or a malformed armor line)"
)
_ARMOR_LINE = re.compile(rb"^[ \t]*-----(?:BEGIN|END) PGP[^\n]*$", re.MULTILINE)
_CLEARSIGNED_LINES = (
    b"-----BEGIN PGP SIGNED MESSAGE-----",
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----END PGP SIGNATURE-----",
)


def clearsigned_block(plaintext: bytes) -> bytes | None:
    """The one clear-signed block that ``plaintext`` consists of, for gpg to verify.

    None when the text holds no armor line at all (it is simply unsigned). Anything else
    that is not exactly one well-formed clear-signed block, with only blank space around
    it, is refused: gpg skips what it does not take for armor (a first line with an extra
    character, a leading tab) and would verify a later block, while a reader sees the text
    before it.
    """
    found = [m.group(0).rstrip(b"\r") for m in _ARMOR_LINE.finditer(plaintext)]
    if not found:
        return None
    block = plaintext.strip(b" \t\r\n")
    starts = block.split(b"\n", 1)[0].rstrip(b"\r") == _CLEARSIGNED_LINES[0]
    if tuple(found) != _CLEARSIGNED_LINES or not starts or not block.endswith(found[-1]):
        raise MalformedMail(NOT_ONE_CLEARSIGNED)
    return block + b"\n"


def recipients_of(header_value: str) -> list[str]:
    return [addr.lower() for _, addr in getaddresses([header_value]) if addr]
