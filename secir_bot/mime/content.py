"""The content of a decrypted mail: its text, its signed parts, its protected headers.

The bytes that a signature covers are cut out of the original text, never re-serialised
(re-serialising can change line endings, header folding or transfer encodings and break the
signature).
"""

from __future__ import annotations

import email
import email.policy
import itertools
import re
from dataclasses import dataclass, field, replace
from email.message import Message

from selectolax.lexbor import LexborHTMLParser

from secir_bot.fidelity import charsets
from secir_bot.fidelity.attachments import Attachment, walk
from secir_bot.fidelity.flowed import unflow
from secir_bot.mime.headers import (
    MalformedMail,
    ids,
    parse_bounded,
    payload_bytes,
    recipients_of,
    sender,
)


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
    # Its files, read within the codec's bounds (``fidelity.attachments.walk``); the list's
    # limits are checked by a step, once the signature is.
    files: tuple[Attachment, ...] = ()
    supersedes: str | None = None  # the signed Supersedes header (a correction), if any


def split_multipart(raw: bytes, boundary: str) -> list[bytes]:
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
    """A text part as text: its charset read the way mail clients really write it
    (``fidelity.charsets``: Windows-1252 labelled Latin-1, UTF-8 under a legacy label,
    unknown labels), and format=flowed paragraphs joined into one line each."""
    found = charsets.part_text(part)
    return unflow(found.text, delsp=found.delsp) if found.flowed else found.text


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
        # A text part that is neither plain text nor HTML (text/csv, text/x-log, a named
        # text file) is a file, not part of the message's text: it was once dropped here
        # without a trace.
        named = part.get_filename() is not None  # a named part is a file (as walk reads it)
        if disposition == "attachment" or named or ctype not in ("text/plain", "text/html"):
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
    msg = parse_bounded(plaintext)
    if msg.get_content_type() == "multipart/signed":
        boundary = msg.get_boundary()
        parts = split_multipart(plaintext, boundary) if boundary else []
        if len(parts) != 2:
            raise MalformedMail("multipart/signed without its two parts")
        inner = parse_bounded(parts[0])
        sig = email.message_from_bytes(parts[1], policy=email.policy.compat32)
        # The text shown is read from the signed part's exact bytes only, and only the
        # signed part's own headers count: headers around it are unsigned.
        return replace(_content_of(inner), signed_part=parts[0], signature=payload_bytes(sig))
    return _content_of(msg)


def _content_of(msg: Message) -> Content:
    """Text, attachments and the protected headers of a signed entity."""
    text, html, _ = _readable(msg)
    files = walk(msg).attachments
    to_cc = [str(v) for name in ("To", "Cc") for v in msg.get_all(name) or []]
    replies = ids(msg.get("In-Reply-To"))
    references = ids(msg.get("References"))
    return Content(
        subject=charsets.header(msg, "Subject") or None,
        text=text,
        html=html,
        files=files,
        supersedes=charsets.header(msg, "Supersedes") or None,
        recipients=tuple(recipients_of(", ".join(to_cc))) if to_cc else None,
        from_addr=(sender(msg)[1].lower() or None) if msg.get("From") is not None else None,
        in_reply_to=replies,
        references=references,
        threaded=msg.get("In-Reply-To") is not None or msg.get("References") is not None,
    )


def inline_content(signed_text: bytes) -> Content:
    """The content of inline PGP from the bytes gpg reported as signed.

    Trailing blanks are dropped from each line: a clear-signature does not cover them
    (RFC 4880 §7.1), so they may not be shown as the signer's.
    """
    # Inline PGP has no charset label: UTF-8 when it is, else Windows-1252 (charsets).
    text = charsets.decode_bytes(signed_text).replace("\r\n", "\n")
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
