"""Tests for secir_bot.validate: every kind of value, what is accepted and each refusal."""

from __future__ import annotations

import re

import pytest

from secir_bot import validate as v


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (" Alice@Registry.NL ", "alice@registry.nl"),
        ("a.b+tag@sub.registry.nl", "a.b+tag@sub.registry.nl"),
        ("admin@нич.рф", "admin@нич.рф"),
    ],
)
def test_email_accepts(text: str, value: str) -> None:
    assert v.email(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the email address is empty"),
        ("alice", "not an email address"),
        ("alice@nl", "the domain needs a dot"),
        ("a@b@c.nl", "not an email address"),
        ("Alice <alice@x.nl>", "not an email address"),
        ("alice@x..nl", "the domain needs a dot"),
        ("alice@-x.nl", "is not a valid name"),
        ("a" * 65 + "@x.nl", "longer than 64"),
        ("alice@x.nl\r\nBcc: eve@x.nl", "control character (U+000D)"),
        ("ali\x00ce@x.nl", "control character (U+0000)"),
        ("ali\u202ece@x.nl", "invisible direction control (U+202E)"),
    ],
)
def test_email_refuses(text: str, message: str) -> None:
    with pytest.raises(v.Invalid, match=re.escape(message)):
        v.email(text)


def test_matrix_ids() -> None:
    assert v.matrix_user_id(" @alice:matrix.registry.nl ") == "@alice:matrix.registry.nl"
    assert v.matrix_user_id("@a.b_c=d-e/f+g:localhost:8448") == "@a.b_c=d-e/f+g:localhost:8448"
    for bad in ("alice:x.nl", "@Alice:x.nl", "@alice", "@alice:x.nl:99999999", "@al ice:x.nl"):
        with pytest.raises(v.Invalid, match="not a Matrix user id"):
            v.matrix_user_id(bad)


def test_room_ids() -> None:
    assert v.room_id("!abc:x.nl") == "!abc:x.nl"
    assert v.room_id("!opaqueV12") == "!opaqueV12"
    with pytest.raises(v.Invalid, match="not a Matrix room id"):
        v.room_id("#alias:x.nl")


def test_cctld() -> None:
    assert v.cctld_label(".рф").a_label == "xn--p1ai"
    assert v.cctld_label("xn--p1ai").a_label == "xn--p1ai"
    with pytest.raises(v.Invalid, match="not a country-code TLD"):
        v.cctld_label(".com")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("+31 70 123 4567", "+31701234567"),
        ("+55 (11) 3038-1900", "+551130381900"),
        ("+81-3-1234-5678", "+81312345678"),
    ],
)
def test_phone_accepts(text: str, value: str) -> None:
    assert v.phone(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("070 123 4567", "with its country code"),
        ("+31 70", "not a valid phone number"),
        ("+999 1234567", "not a"),
        ("+31 seventy", "not a"),
    ],
)
def test_phone_refuses(text: str, message: str) -> None:
    with pytest.raises(v.Invalid, match=message):
        v.phone(text)


def test_timezones() -> None:
    assert v.timezone("Europe/Amsterdam") == "Europe/Amsterdam"
    assert v.timezone("america/sao_paulo") == "America/Sao_Paulo"
    assert v.timezone("UTC") == "UTC"
    for bad in ("CET+1", "../../etc/passwd", "Mars/Olympus"):
        with pytest.raises(v.Invalid, match="not an IANA time zone"):
            v.timezone(bad)


def test_languages() -> None:
    assert v.language("EN") == "en"
    assert v.language("pt_br") == "pt-BR"
    assert v.languages("nl, en  pt-BR,en") == ("nl", "en", "pt-BR")
    with pytest.raises(v.Invalid, match="not a language tag"):
        v.language("english")
    with pytest.raises(v.Invalid, match="not a known language tag"):
        v.language("xx")


def test_fingerprints() -> None:
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    assert v.fingerprint("0x" + fpr.lower()) == fpr
    spaced = " ".join(fpr[i : i + 4] for i in range(0, 40, 4))
    assert v.fingerprint(spaced) == fpr
    with pytest.raises(v.Invalid, match="only OpenPGP v4"):
        v.fingerprint("A" * 64)
    with pytest.raises(v.Invalid, match="short key id"):
        v.fingerprint("89ABCDEF01234567")
    with pytest.raises(v.Invalid, match="hexadecimal"):
        v.fingerprint("Z" * 40)
    with pytest.raises(v.Invalid, match="40 hex digits, this has 39"):
        v.fingerprint(fpr[:-1])


def test_one_line_refuses_controls_and_length() -> None:
    assert v.one_line("  Alice Jansen ") == "Alice Jansen"
    with pytest.raises(v.Invalid, match="control character"):
        v.one_line("a\nb", "the name")
    with pytest.raises(v.Invalid, match="longer than 5"):
        v.one_line("abcdef", max_length=5)


def test_problem_adapts_a_validator_for_the_config_reader() -> None:
    check = v.problem(v.email)
    assert check("a@b.nl") is None
    assert check("nope") == "not an email address: 'nope'"


def test_messages_quote_and_shorten_long_input() -> None:
    with pytest.raises(v.Invalid) as caught:
        v.email("x" * 200 + "@")
    assert len(str(caught.value)) < 120
