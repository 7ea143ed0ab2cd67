"""The list's own letters: a text with attachments, to one person, from the list.

A command's mail (a welcome with the list key, a challenge, an invitation with a one-time
code) is one MIME entity: the text and its attachments, with protected headers. It goes
out encrypted to its reader's key (``compose_outer`` around it), or, when the reader has no
key yet (the ccTLD's administrative contact in the D2 procedure), signed only: RFC 3156
multipart/signed, the entity as signed and the list key's detached signature beside it.
"""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from secir_bot.mime.compose import LOOP_HEADER, ListHeaders, _address, _line, _raw_line

MICALG = "pgp-sha256"  # the signature is made with this digest (``Keyring.detach_sign``)

# (filename, content type, data)
Part = tuple[str, str, bytes]


def letter_entity(*, text: str, attachments: Sequence[Part] = ()) -> EmailMessage:
    """The text, and each attachment as its own part (no headers yet)."""
    body = EmailMessage(policy=email.policy.SMTP)
    body.set_content(text, charset="utf-8", cte="quoted-printable")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        body.add_attachment(
            data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename
        )
    return body


def letter_inner(
    *,
    subject: str,
    text: str,
    attachments: Sequence[Part],
    lists: ListHeaders,
    to: str,
    message_id: str,
    reply_to: str = "",
    date: datetime | None = None,
) -> bytes:
    """The entity to encrypt or sign, with its protected headers (RFC 9788 style)."""
    body = letter_entity(text=text, attachments=attachments)
    body.set_param("protected-headers", "v1")
    del body["MIME-Version"]
    headers = (
        _raw_line("From", _address(lists.name, lists.address))
        + _raw_line("To", to)
        + (_raw_line("Reply-To", reply_to) if reply_to else b"")
        + _line("Subject", subject)
        + _raw_line("Message-ID", message_id)
        + _raw_line("Date", format_datetime(date or datetime.now(UTC)))
    )
    # The signature covers exactly these bytes: CR LF line ends, as they go on the wire.
    return (headers + body.as_bytes()).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def compose_signed(
    *,
    inner: bytes,
    signature: bytes,
    subject: str,
    lists: ListHeaders,
    to: str,
    message_id: str,
    reply_to: str = "",
    date: datetime | None = None,
) -> bytes:
    """multipart/signed around ``inner`` (from ``letter_inner``) and its signature."""
    boundary = "secir-signed-" + message_id.strip("<>").replace("@", "-")
    headers = (
        _raw_line("From", _address(lists.name, lists.address))
        + _raw_line("To", to)
        + _raw_line("Reply-To", reply_to or lists.address)
        + _line("Subject", subject)
        + _raw_line("Message-ID", message_id)
        + _raw_line("Date", format_datetime(date or datetime.now(UTC)))
        + _raw_line("List-Id", _address(lists.name, lists.list_id))
        + _raw_line("List-Owner", f"<mailto:{lists.owner}>")
        + _raw_line("Auto-Submitted", "auto-generated")
        + _raw_line("X-Auto-Response-Suppress", "All")
        + _raw_line(LOOP_HEADER, lists.list_id)
        + b"MIME-Version: 1.0\r\n"
        + _raw_line(
            "Content-Type",
            f'multipart/signed; micalg={MICALG}; protocol="application/pgp-signature"; '
            f'boundary="{boundary}"',
        )
    )
    sig = signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return (
        headers
        + b"\r\n"
        + f"--{boundary}\r\n".encode()
        + inner
        + f"\r\n--{boundary}\r\n".encode()
        + b"Content-Type: application/pgp-signature; name=signature.asc\r\n"
        + b"Content-Description: OpenPGP digital signature\r\n\r\n"
        + sig
        + f"\r\n--{boundary}--\r\n".encode()
    )
