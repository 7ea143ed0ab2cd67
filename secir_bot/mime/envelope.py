"""The envelope of a received mail: what can be read before anything is decrypted."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from secir_bot.mime.compose import LOOP_HEADER
from secir_bot.mime.headers import (
    MalformedMail,
    automated,
    header,
    ids,
    message_id_of,
    parse_bounded,
    payload_bytes,
    sender,
)

ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
ARMOR_END = b"-----END PGP MESSAGE-----"
CLEARSIGN_BEGIN = "-----BEGIN PGP SIGNED MESSAGE-----"


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


def parse_envelope(raw: bytes) -> Envelope:
    """Read the cleartext facts of a received mail; ``MalformedMail`` (with a fixed reason)
    is the only exception, whatever the bytes."""
    try:
        return _parse_envelope(raw)
    except MalformedMail:
        raise
    except Exception:  # the parser's own errors quote the input: keep them out of reasons
        raise MalformedMail("unparseable message") from None


def _parse_envelope(raw: bytes) -> Envelope:
    if not raw.strip():
        raise MalformedMail("empty message")
    msg = parse_bounded(raw)
    if not msg.keys():
        raise MalformedMail("no headers")
    name, addr = sender(msg)
    ctype = msg.get_content_type()
    kind, cipher = "plain", None
    if ctype == "multipart/encrypted":
        payload = msg.get_payload()
        parts = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
        if len(parts) != 2:
            raise MalformedMail("multipart/encrypted without its two parts")
        if parts[0].get_content_type() != "application/pgp-encrypted":
            raise MalformedMail("multipart/encrypted that is not PGP/MIME")
        kind, cipher = "pgp-mime", payload_bytes(parts[1])
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
        subject=header(msg, "Subject"),
        in_reply_to=ids(msg.get("In-Reply-To")),
        references=ids(msg.get("References")),
        list_id=header(msg, "List-Id") or None,
        loop_marker=header(msg, LOOP_HEADER) or None,
        automated=automated(msg, addr),
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
        data = payload_bytes(part)
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
