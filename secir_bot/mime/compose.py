"""Composing the list's mail: PGP/MIME (RFC 3156, §6.2 combined signed+encrypted).

The real subject and sender travel inside the encrypted part as protected headers; the
cleartext Subject carries only the list tag.

Every header is written here from a value that is already plain ASCII: control characters
become spaces, encoded-word look-alikes (``=?``) are broken up, and non-ASCII text is
RFC 2047-encoded by us. Python's own header machinery never gets a value it could decode
and refold: in the interpreters this runs on, it wrote a decoded CR LF unfolded
(CVE-2024-6923), which let a Matrix member's first line add headers and turn the part every
member decrypts into HTML. Only the bodies are made by the ``email`` package.
"""

from __future__ import annotations

import email.policy
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime

LOOP_HEADER = "X-Secir-List"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]+")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_LINE_END = re.compile(rb"\r\n|\r|\n")  # as the email package's generator splits lines
_PGP_MIME_HEAD = (
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
    ' boundary="{b}"\r\n'
    "\r\n"
    "--{b}\r\n"
    "Content-Type: application/pgp-encrypted\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "Content-Description: PGP/MIME version identification\r\n"
    "\r\n"
    "Version: 1\r\n"
    "\r\n"
    "--{b}\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    'Content-Disposition: inline; filename="encrypted.asc"\r\n'
    "\r\n"
)


def neutral(value: str) -> str:
    """``value`` safe for one header line: control characters and line or paragraph
    separators become one space, and ``=?`` (the start of an encoded-word) becomes ``= ?``,
    so that no mail program decodes it into something else."""
    return _CONTROL.sub(" ", value).replace("=?", "= ?").strip()


def _line(name: str, value: str) -> bytes:
    """One header, RFC 2047-encoded by us when it is not ASCII, folded at 78 columns."""
    value = neutral(value)
    charset = "us-ascii" if value.isascii() else "utf-8"
    folded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}\r\n".encode("ascii")


def _raw_line(name: str, value: str) -> bytes:
    """A structured header we built from checked parts (addresses, ids, dates)."""
    # Folding (CRLF then a space) is ours, from the encoder; any other CR or LF is not.
    if not value.isascii() or _CONTROL.search(value.replace("\r\n ", " ")):
        raise ValueError(f"the {name} header would not be plain ASCII")
    return f"{name}: {value}\r\n".encode("ascii")


def _phrase(text: str) -> str:
    """A display name (RFC 5322 phrase): encoded-words for non-ASCII, else quoted when it
    holds specials."""
    text = neutral(text)
    if not text.isascii():
        return Header(text, "utf-8").encode(linesep="\r\n")
    if _SPECIALS.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _address(display: str, address: str) -> str:
    return f"{_phrase(display)} <{address}>"


@dataclass(frozen=True)
class ListHeaders:
    """The list's identity as it appears in every mail it sends."""

    name: str
    address: str
    list_id: str
    owner: str
    tag: str


def _display(from_label: str | None, lists: ListHeaders) -> str:
    """``Alice Jansen (.nl) via SECIR`` for a member's post; the list's name for its own."""
    return f"{from_label} via {lists.name}" if from_label else lists.name


def compose_inner(
    *,
    subject: str,
    text: str,
    from_label: str | None,
    lists: ListHeaders,
    message_id: str,
    date: datetime | None = None,
    entity: EmailMessage | None = None,
) -> bytes:
    """The part that gets encrypted: protected headers plus the text (or ``entity``, a
    body with more parts than the text: ``fidelity.mailparts.mail_body``)."""
    body = entity
    if body is None:
        body = EmailMessage(policy=email.policy.SMTP)
        body.set_content(text, charset="utf-8", cte="quoted-printable")
    body.set_param("protected-headers", "v1")
    headers = (
        _raw_line("From", _address(_display(from_label, lists), lists.address))
        + _raw_line("To", lists.address)
        + _line("Subject", subject)
        + _raw_line("Message-ID", message_id)
        + _raw_line("Date", format_datetime(date or datetime.now(UTC)))
    )
    return headers + body.as_bytes()


def compose_outer(
    *,
    armored: bytes,
    from_label: str | None,
    lists: ListHeaders,
    message_id: str,
    to: str,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    reply: bool = False,
    automated: bool = False,
    date: datetime | None = None,
    reply_to: str = "",
) -> bytes:
    """The PGP/MIME envelope around ``armored`` with the list headers; ``reply_to`` where
    answers go when not to the list (the request address, for the procedure's mail: a
    client that reads only the outer headers must answer there too)."""
    headers = [
        _raw_line("From", _address(_display(from_label, lists), lists.address)),
        _raw_line("To", to),
        _raw_line("Reply-To", reply_to or lists.address),
        _line("Subject", f"[{lists.tag}] {'Re: ' if reply else ''}encrypted message"),
        _raw_line("Message-ID", message_id),
        _raw_line("Date", format_datetime(date or datetime.now(UTC))),
    ]
    if in_reply_to:
        headers.append(_raw_line("In-Reply-To", in_reply_to))
    if references:
        headers.append(_raw_line("References", " ".join(references)))
    headers += [
        _raw_line("List-Id", _address(lists.name, lists.list_id)),
        _raw_line("List-Post", f"<mailto:{lists.address}>"),
        _raw_line("List-Help", f"<mailto:{lists.address}?subject=help>"),
        _raw_line("List-Unsubscribe", f"<mailto:{lists.address}?subject=unsubscribe>"),
        _raw_line("List-Owner", f"<mailto:{lists.owner}>"),
        _raw_line("Precedence", "list"),
        _raw_line("X-Auto-Response-Suppress", "All"),
        _raw_line(LOOP_HEADER, lists.list_id),
    ]
    if automated:
        headers.append(_raw_line("Auto-Submitted", "auto-replied"))
    return b"".join(headers) + pgp_mime_body(armored)


def pgp_mime_body(armored: bytes) -> bytes:
    """What ``make_pgp_mime`` makes of ``armored``, as bytes, written here directly.

    The structure is fixed and every header in it is ours; the email package's generator
    took ~2 ms of each list mail to walk the armored text line by line. The output is the
    generator's, byte for byte, but for the random boundary (tests/test_mime_pgp.py).
    """
    armored.decode("ascii")  # armor is ASCII; anything else is refused, as the 7bit part was
    payload = _LINE_END.sub(b"\r\n", armored)
    while True:
        boundary = "=" * 15 + f"{secrets.randbelow(sys.maxsize):019d}" + "=="
        if b"--" + boundary.encode("ascii") not in payload:
            break
    return (
        _PGP_MIME_HEAD.format(b=boundary).encode("ascii")
        + payload
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )


def make_pgp_mime(outer: EmailMessage, armored: bytes) -> None:
    """Turn ``outer`` into RFC 3156 multipart/encrypted around the armored ``armored``."""
    outer.set_type("multipart/encrypted")
    outer.set_param("protocol", "application/pgp-encrypted")
    control = EmailMessage(policy=email.policy.SMTP)
    control.set_content(
        b"Version: 1\r\n", maintype="application", subtype="pgp-encrypted", cte="7bit"
    )
    control["Content-Description"] = "PGP/MIME version identification"
    del control["MIME-Version"]
    body = EmailMessage(policy=email.policy.SMTP)
    body.set_content(
        armored,
        maintype="application",
        subtype="octet-stream",
        cte="7bit",
        disposition="inline",
        filename="encrypted.asc",
    )
    del body["MIME-Version"]
    outer.set_payload([control, body])
