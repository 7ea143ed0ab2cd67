"""The whois client against a real whois responder on loopback TCP, IANA's answer format,
and every way an answer can be unusable."""

from __future__ import annotations

import hashlib
import re
import socket

import pytest

from secir_bot import whois
from secir_bot.sandbox.whois import Mode, WhoisResponder, iana_record, iana_records

DOMAIN = "test.example"


def _server(responder: WhoisResponder, **kw: float) -> whois.WhoisServer:
    return whois.WhoisServer(host="127.0.0.1", port=responder.port, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "admin", "organisation"),
    [
        ("nl", "admin-nl@test.example", "SIDN (Stichting Internet Domeinregistratie Nederland)"),
        ("br", "admin-br@test.example", "Comite Gestor da Internet no Brasil"),
        ("jp", "admin-jp@test.example", "Japan Registry Services Co., Ltd."),
        ("uk", "admin-uk@test.example", "Nominet UK"),
        ("xn--p1ai", "admin-rf@test.example", "Coordination Center for TLD RU"),
    ],
)
async def test_admin_contact_of_each_recorded_cctld(
    label: str, admin: str, organisation: str
) -> None:
    async with WhoisResponder(iana_records(DOMAIN)) as responder:
        record = await whois.admin_contact(_server(responder), label)
    assert responder.queries == [label]
    assert record.domain == label
    assert record.admin.email == admin
    assert record.admin.role == "administrative"
    assert record.organisation == organisation
    assert record.delegated and record.status == "ACTIVE"
    assert record.whois_server.startswith("whois.")
    assert record.sha256 == hashlib.sha256(record.raw).hexdigest()
    assert record.raw == iana_records(DOMAIN)[label].encode()


async def test_an_unknown_tld_is_not_found() -> None:
    async with WhoisResponder(iana_records(DOMAIN)) as responder:
        with pytest.raises(whois.WhoisNotFound, match=r"IANA has no record for \.zz"):
            await whois.admin_contact(_server(responder), "zz")


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("slow", whois.WhoisTimeout, "did not answer within 0.3 s"),
        ("garbage", whois.WhoisGarbage, "not text"),
        ("huge", whois.WhoisTooLarge, "more than 65536 bytes"),
        ("refuse", whois.WhoisRefused, "gave no record: Query rate limit exceeded"),
        ("empty", whois.WhoisRefused, "empty answer"),
    ],
)
async def test_a_misbehaving_server_is_a_precise_error(
    mode: Mode, error: type[whois.WhoisError], message: str
) -> None:
    async with WhoisResponder(iana_records(DOMAIN), mode=mode) as responder:
        with pytest.raises(error, match=re.escape(message)):
            await whois.admin_contact(_server(responder, timeout=0.3), "nl")


async def test_a_server_that_is_down_is_unreachable() -> None:
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = whois.WhoisServer(host="127.0.0.1", port=port, timeout=2)
    with pytest.raises(
        whois.WhoisUnreachable, match=f"cannot reach the whois server 127.0.0.1:{port}"
    ):
        await whois.admin_contact(server, "nl")


def _record(*changes: tuple[str, str]) -> bytes:
    text = iana_record(
        "nl", "SIDN", "Arnhem", "Netherlands", "whois.domain-registry.nl", "1986", "2025",
        domain=DOMAIN,
    )  # fmt: skip
    for old, new in changes:
        text = text.replace(old, new)
    return text.encode()


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (
            _record(("e-mail:       admin-nl@test.example\r\n", "")),
            whois.WhoisNoAdminContact,
            "gives no e-mail address for the administrative contact",
        ),
        (
            _record(("contact:      administrative", "contact:      billing")),
            whois.WhoisNoAdminContact,
            "has no administrative contact",
        ),
        (
            _record(("admin-nl@test.example", "admin at sidn")),
            whois.WhoisNoAdminContact,
            "not a usable address",
        ),
        (
            _record(("domain:       NL", "domain:       BE")),
            whois.WhoisGarbage,
            "about .be, not .nl",
        ),
        (
            _record(("source:       IANA", "source:       RIPE")),
            whois.WhoisGarbage,
            "source: IANA",
        ),
        (_record(("status:       ACTIVE\r\n", "")), whois.WhoisGarbage, "no status line"),
        (b"<html><body>Service unavailable</body></html>", whois.WhoisGarbage, "not 'key: value'"),
        (b"domain: NL\x07\r\n", whois.WhoisGarbage, "control characters"),
        (b"remarks: hello\r\nsource: IANA\r\n", whois.WhoisGarbage, "no domain: line"),
    ],
)
def test_unusable_records_are_refused(
    raw: bytes, error: type[whois.WhoisError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        whois.parse_iana(raw, "nl")


def test_a_record_not_active_is_parsed_but_not_delegated() -> None:
    record = whois.parse_iana(_record(("ACTIVE", "RETIRED")), "nl")
    assert not record.delegated
    assert record.status == "RETIRED"


async def test_the_query_is_one_line_and_ascii() -> None:
    with pytest.raises(ValueError, match="not a whois query"):
        await whois.query(whois.WhoisServer(), "nl\r\nsecret")
