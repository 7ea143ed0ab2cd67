"""The key-id rewrite that hides recipients in Sequoia's messages (``crypto.wildcard``).

Packets are built here byte by byte (RFC 9580 §4.2 headers): new-format headers with 1, 2
and 5-octet lengths, old-format ones with 1, 2 and 4-octet lengths. Every v3 session key
packet at the front gets the wildcard key id and nothing else changes; anything else
refuses. tests/test_sequoia.py checks the rewrite on Sequoia's real output with gpg.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from secir_bot.crypto.wildcard import hide_key_ids

KEY_ID = bytes.fromhex("1122334455667788")


def new_format(tag: int, body: bytes, octets: int = 0) -> bytes:
    """A new-format packet; ``octets`` forces a 5-octet length (0: the shortest form)."""
    n = len(body)
    if octets == 5 or n >= 8384:
        length = b"\xff" + n.to_bytes(4, "big")
    elif n < 192:
        length = bytes([n])
    else:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    return bytes([0xC0 | tag]) + length + body


def old_format(tag: int, body: bytes, octets: int) -> bytes:
    kind = {1: 0, 2: 1, 4: 2}[octets]
    return bytes([0x80 | tag << 2 | kind]) + len(body).to_bytes(octets, "big") + body


def pkesk(key_id: bytes = KEY_ID, version: int = 3, size: int = 40) -> bytes:
    """A v3 PKESK body: version, key id, algorithm (ECDH), then stand-in key material."""
    return bytes([version]) + key_id + bytes([18]) + b"\x5a" * size


def seipd(size: int = 60) -> bytes:
    return new_format(18, b"\x01" + KEY_ID + bytes(size))  # the same octets, not a key id


Build = Callable[[bytes], bytes]
HEADERS: dict[str, Build] = {
    "new, 1-octet length": lambda body: new_format(1, body),
    "new, 5-octet length": lambda body: new_format(1, body, octets=5),
    "old, 1-octet length": lambda body: old_format(1, body, 1),
    "old, 2-octet length": lambda body: old_format(1, body, 2),
    "old, 4-octet length": lambda body: old_format(1, body, 4),
}


@pytest.mark.parametrize("header", HEADERS)
def test_every_leading_session_key_gets_the_wildcard_and_the_rest_is_unchanged(
    header: str,
) -> None:
    build = HEADERS[header]
    packets = [build(pkesk(bytes([n]) * 8)) for n in (1, 2, 3)]
    rest = seipd()
    message = b"".join(packets) + rest

    hidden = hide_key_ids(message)

    assert len(hidden) == len(message)
    at = 0
    for packet in packets:
        head = len(packet) - len(pkesk())
        expected = packet[: head + 1] + bytes(8) + packet[head + 9 :]
        assert hidden[at : at + len(packet)] == expected
        at += len(packet)
    assert hidden[at:] == rest  # the encrypted data, key-id-like octets and all


def test_two_octet_lengths_and_mixed_headers() -> None:
    big = new_format(1, pkesk(size=400))  # 410 octets: a 2-octet new-format length
    assert 192 <= big[1] < 224
    small = old_format(1, pkesk(), 1)
    rest = seipd(9000)  # 9009 octets: a 5-octet length
    assert rest[1] == 0xFF

    hidden = hide_key_ids(big + small + rest)

    assert hidden[: len(big)] == big[:4] + bytes(8) + big[12:]
    assert hidden[len(big) : -len(rest)] == small[:3] + bytes(8) + small[11:]
    assert hidden[-len(rest) :] == rest


REFUSED: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "ends where a packet should start"),
    "not a packet": (b"\x01" + seipd(), "not an OpenPGP packet header"),
    "no session key": (seipd(), "no public-key session key packet"),
    "a v6 session key": (new_format(1, pkesk(version=6)) + seipd(), "version 6, not 3"),
    "a partial length": (b"\xc1\xe5" + pkesk() + seipd(), "without a definite length"),
    "an indeterminate length": (b"\x87" + pkesk() + seipd(), "without a definite length"),
    "too short for a key id": (new_format(1, b"\x03\x11\x22") + seipd(), "too short"),
    "truncated header": (new_format(1, pkesk()) + b"\xc1\xff\x00", "inside a packet header"),
    "truncated body": (new_format(1, pkesk())[:30], "ends inside a session key packet"),
    "nothing after the keys": (new_format(1, pkesk()), "ends where a packet should start"),
    "a password after the keys": (
        new_format(1, pkesk()) + new_format(3, b"\x04\x09\x03" + bytes(20)) + seipd(),
        "tag 3 after the session keys",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_what_is_not_expected_is_refused(case: str) -> None:
    message, why = REFUSED[case]
    with pytest.raises(ValueError, match=why):
        hide_key_ids(message)
