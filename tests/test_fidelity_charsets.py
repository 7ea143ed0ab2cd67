"""Character sets (issue 10): text and headers from real clients' shapes, no mojibake.

The corpus files (``tests/corpus/decrypted-charset-*``, listed in its README) are the
decrypted content of members' mails; each is read as the intake will read it.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from pathlib import Path

import pytest

from secir_bot.fidelity.attachments import walk
from secir_bot.fidelity.charsets import (
    codec_for,
    decode_bytes,
    display_address,
    header,
    header_text,
    part_text,
    transport_address,
)

CORPUS = Path(__file__).parent / "corpus"


def parsed(name: str) -> Message:
    return email.message_from_bytes((CORPUS / name).read_bytes(), policy=email.policy.compat32)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # Outlook and webmail: Windows-1252 (euro, dashes, curly quotes) labelled Latin-1.
        ("decrypted-charset-cp1252-labelled-latin1.txt", "Costs: € 1.200 – “urgent” … café"),
        # mutt with a wrong locale: UTF-8 labelled Latin-1.
        ("decrypted-charset-utf8-labelled-latin1.txt", "Grüße, Ольга — ✓ done"),
        ("decrypted-charset-iso-8859-2-qp.txt", "Příliš žluťoučký kůň úpěl ďábelské ódy."),
        # Windows-1250 labelled ISO-8859-2 (its C1 bytes are letters in 1250).
        ("decrypted-charset-windows-1250-labelled-iso-8859-2.txt", "Šťastný „nový“ rok – Žilina"),
        ("decrypted-charset-koi8r-base64.txt", "Атака на резолверы .рф продолжается."),
        ("decrypted-charset-no-label-8bit-utf8.txt", "naïve résumé — 東京"),
        ("decrypted-charset-unknown-label.txt", "Smørrebrød"),
        ("decrypted-charset-headers-rfc2047-raw-utf8-idn.txt", "Текст письма."),
    ],
)
def test_issue10_charset_corpus_reads_without_mojibake(name: str, text: str) -> None:
    got = part_text(parsed(name)).text.strip("\n")
    assert got == text
    assert "\ufffd" not in got and "Ã" not in got and "â€" not in got


def test_headers_encoded_words_raw_utf8_and_idn() -> None:
    msg = parsed("decrypted-charset-headers-rfc2047-raw-utf8-idn.txt")
    # Encoded-words: a Latin-1 label with Windows-1252 bytes, then a UTF-8 word.
    assert header(msg, "Subject") == "“Lock” bypass – update✓"
    # Raw UTF-8 in a header (no encoded-words), which the email package alone garbles.
    assert header(msg, "From") == "Ольга Иванова <olga@xn--c1ad6a.xn--p1ai>"
    assert header(msg, "To") == "Liste Sécur <secir@lists.secir.test>"
    assert header(msg, "X-Missing") == ""


def test_idn_addresses() -> None:
    assert display_address("olga@xn--c1ad6a.xn--p1ai") == "olga@рег.рф"
    assert display_address("alice@sidn.nl") == "alice@sidn.nl"
    assert display_address("bad@xn--zz.test") == "bad@xn--zz.test"  # not valid IDNA: as is
    assert transport_address("olga@рег.рф") == "olga@xn--c1ad6a.xn--p1ai"
    assert transport_address("Alice@SIDN.NL") == "Alice@sidn.nl"
    with pytest.raises(ValueError, match="not a valid"):
        transport_address("x@bad\u0000name.test")
    with pytest.raises(ValueError, match="not an email"):
        transport_address("no-at-sign")


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("ISO-8859-1", "cp1252"),
        ("us-ascii", "cp1252"),
        ('"utf-8"', "utf-8"),
        ("ks_c_5601-1987", "cp949"),
        ("gb2312", "gb18030"),
        ("iso-8859-8-i", "iso8859-8"),
        ("unknown-8bit", None),
        ("x-no-such-charset", None),
        # Python text codecs that are not charsets must not be used for mail.
        ("unicode_escape", None),
        ("punycode", None),
        ("rot13", None),
        ("base64", None),
        (None, None),
    ],
)
def test_codec_for(label: str | None, codec: str | None) -> None:
    assert codec_for(label) == codec


def test_decode_bytes_rules() -> None:
    assert decode_bytes("é".encode(), "iso-8859-1") == "é"  # UTF-8 wins over a legacy label
    assert decode_bytes(b"\x93q\x94", "iso-8859-1") == "“q”"
    assert decode_bytes(b"caf\xe9", "utf-8") == "caf\ufffd"  # labelled UTF-8 but broken
    assert decode_bytes(b"caf\xe9", None) == "café"  # unlabelled: Windows-1252
    assert decode_bytes("\ufeffBOM".encode(), "utf-8") == "BOM"
    assert decode_bytes(b"\\u0041", "unicode-escape") == "\\u0041"  # not interpreted
    # A short text in a multi-byte charset is believed even when it is valid UTF-8.
    assert decode_bytes("Ä".encode(), "shift_jis") != "Ä"
    assert decode_bytes("東京".encode("shift_jis"), "shift_jis") == "東京"
    assert decode_bytes("ok".encode("utf-16"), "utf-16") == "ok"


def test_header_text_survives_broken_words() -> None:
    assert header_text("=?utf-8?B?not*base64?= tail") != ""
    assert header_text("=?x-nonsense?Q?abc?=") == "abc"
    assert header_text("plain\r\n folded") == "plain folded"
    assert header_text(None) == ""


def test_issue10_walk_reads_bodies_of_every_charset_shape() -> None:
    """The whole walker, not just one part: mutt's Latin-1 quoted-printable body."""
    parts = walk(parsed("decrypted-mutt-latin1-qp-rfc2231-name.txt"))
    assert parts.text is not None
    assert parts.text.text.startswith("Grüße aus Köln,\n\ndie Antwort von ns2 ist seit 08:12")


def test_encoded_words_next_to_raw_non_ascii_text() -> None:
    """The email package's decoder returns the text around encoded-words as
    raw-unicode-escape bytes, so "Ольга" came out as "\\u041e…"; each word is decoded alone."""
    assert header_text("Ольга =?utf-8?Q?Iv=C3=A1nova?= é") == "Ольга Ivánova é"
    assert header_text("a\\u0041 =?utf-8?Q?z?=") == "a\\u0041 z"  # a backslash stays one
    assert header_text("=?utf-8*en?Q?hi?= =?utf-8?Q?_there?=") == "hi there"
