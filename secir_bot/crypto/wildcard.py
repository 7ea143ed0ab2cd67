"""Hidden recipients for messages Sequoia writes: the wildcard key id of gpg's --throw-keyids.

An OpenPGP message encrypted to public keys starts with one public-key encrypted session key
packet (PKESK, tag 1) per recipient; a version 3 PKESK names its recipient by key id in
octets 1..8 of its body. Eight zero octets there is the "wildcard" key id of RFC 4880 §5.1
and RFC 9580 §5.1: the recipient tries its secret keys on it, as with gpg's
``--throw-keyids``. The key id is covered by no signature or MAC, so rewriting it changes
nothing else.

:func:`hide_key_ids` walks the packet headers from the start (new and old format, RFC 4880
§4.2 / RFC 9580 §4.2), zeroes the key id of every leading v3 PKESK, and copies the rest
unchanged from the first packet that is not one. Anything it does not expect (no PKESK, a
PKESK that is not v3 or has an indeterminate or partial length, a session key packet of
another kind, truncation) raises ``ValueError``: a message that would show a key id is
never handed back.
"""

from __future__ import annotations

PKESK = 1
ENCRYPTED_DATA = frozenset({9, 18, 20})  # SED, SEIPD (v1 and v2), OCB AEAD (draft)
WILDCARD = bytes(8)


def _octets(data: bytes, at: int, count: int) -> bytes:
    if at + count > len(data):
        raise ValueError("the message ends inside a packet header")
    return data[at : at + count]


def _header(data: bytes, at: int) -> tuple[int, int, int | None]:
    """(tag, offset of the body, body length or ``None`` when not given in the header)."""
    if at >= len(data):
        raise ValueError("the message ends where a packet should start")
    first = data[at]
    if not first & 0x80:
        raise ValueError("not an OpenPGP packet header")
    if first & 0x40:  # new format: the tag in bits 0..5, then a 1, 2 or 5-octet length
        tag = first & 0x3F
        octet = _octets(data, at + 1, 1)[0]
        if octet < 192:
            return tag, at + 2, octet
        if octet < 224:
            return tag, at + 3, ((octet - 192) << 8) + _octets(data, at + 2, 1)[0] + 192
        if octet == 255:
            return tag, at + 6, int.from_bytes(_octets(data, at + 2, 4), "big")
        return tag, at + 2, None  # a partial body length
    tag = (first >> 2) & 0x0F  # old format: the tag in bits 2..5, the length type in 0..1
    kind = first & 0x03
    if kind == 3:
        return tag, at + 1, None  # indeterminate length
    size = (1, 2, 4)[kind]
    return tag, at + 1 + size, int.from_bytes(_octets(data, at + 1, size), "big")


def hide_key_ids(message: bytes) -> bytes:
    """``message`` (binary OpenPGP) with the key id of every recipient's PKESK zeroed."""
    out = bytearray(message)
    at = 0
    hidden = 0
    while True:
        tag, body, length = _header(message, at)
        if tag != PKESK:
            break
        if length is None:
            raise ValueError("a session key packet without a definite length")
        if body + length > len(message):
            raise ValueError("the message ends inside a session key packet")
        if length < 10:
            raise ValueError("a session key packet too short for a key id")
        if message[body] != 3:
            raise ValueError(f"a session key packet of version {message[body]}, not 3")
        out[body + 1 : body + 9] = WILDCARD
        hidden += 1
        at = body + length
    if not hidden:
        raise ValueError("no public-key session key packet in the message")
    if tag not in ENCRYPTED_DATA:
        raise ValueError(f"a packet of tag {tag} after the session keys, not encrypted data")
    return bytes(out)
