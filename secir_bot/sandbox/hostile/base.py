"""The shape of a hostile case, the address placeholders, and small mail builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FROM = b"@@FROM@@"  # a member's address (From alone proves nothing)
LIST = b"@@LIST@@"  # the list address
LIST_ID = b"@@LISTID@@"  # the list's List-Id
ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\n%s\r\n-----END PGP MESSAGE-----\r\n"
MARKER = "HOSTILE"  # in every case's text: never to be seen by a member

# How the case builders record a case: add(name, data, outcome, *reasons).
Add = Callable[..., None]


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    outcome: str  # "rejected", "dropped" ("dropped|rejected" when it depends), "command"
    reasons: tuple[str, ...]  # one of these is in the recorded reason

    def filled(self, sender: str, list_address: str, list_id: str) -> bytes:
        return (
            self.data.replace(FROM, sender.encode())
            .replace(LIST, list_address.encode())
            .replace(LIST_ID, list_id.encode())
        )


def _head(
    name: str, *, headers: bytes = b"", msgid: bytes | None = None, sender: bytes = FROM
) -> bytes:
    """The header lines of a case, without Content-Type."""
    mid = msgid if msgid is not None else b"<" + name.encode() + b"@hostile.test>"
    return (
        b"X-Corpus-Case: " + name.encode() + b"\r\nFrom: Hostile <" + sender + b">\r\n"
        b"To: " + LIST + b"\r\nSubject: " + MARKER.encode() + b" " + name.encode() + b"\r\n"
        b"Message-ID: " + mid + b"\r\n" + headers
    )


def _mail(
    name: str,
    body: bytes,
    *,
    headers: bytes = b"",
    ctype: bytes = b"text/plain",
    msgid: bytes | None = None,
    sender: bytes = FROM,
) -> bytes:
    head = _head(name, headers=headers, msgid=msgid, sender=sender)
    return head + b"Content-Type: " + ctype + b"\r\n\r\n" + body


def _marker(name: str) -> bytes:
    return f"{MARKER}-{name} text\r\n".encode()


def _nested(depth: int, kind: bytes = b"multipart/mixed") -> bytes:
    return nested_parts(depth, b"nested " + MARKER.encode() + b"\r\n", kind, b"n")


def nested_parts(
    depth: int, text: bytes, kind: bytes = b"multipart/mixed", boundary: bytes = b"b"
) -> bytes:
    """A text/plain part of ``text`` inside ``depth`` levels of ``kind`` multiparts (the
    boundary of each level: ``boundary`` and the level); a MIME body without its header."""
    inner = b"Content-Type: text/plain\r\n\r\n" + text
    for level in range(depth):
        b = boundary + b"%d" % level
        inner = (
            b"Content-Type: "
            + kind
            + b'; boundary="'
            + b
            + b'"\r\n\r\n--'
            + b
            + b"\r\n"
            + inner
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return inner


def _parts(count: int) -> bytes:
    part = b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return part * count + b"--p--\r\n"


def _pgp_mime(control: bytes, payload: bytes, extra: bytes = b"") -> bytes:
    return (
        b"--e\r\nContent-Type: application/pgp-encrypted\r\n\r\n" + control + b"\r\n"
        b"--e\r\nContent-Type: application/octet-stream\r\n\r\n"
        + payload
        + b"\r\n"
        + extra
        + b"--e--\r\n"
    )


ENC = b'multipart/encrypted; protocol="application/pgp-encrypted"; boundary="e"'
NOT_ENCRYPTED = ("not encrypted",)
UNREADABLE = ("unreadable mail",)
UNDECRYPTABLE = ("could not be decrypted",)
AUTOMATED = ("auto", "bounce", "precedence", "daemon", "report")
