"""A small whois server on loopback that answers like IANA's, for the tests and the demo.

IANA cannot be reached from tests, so :class:`WhoisResponder` serves recorded answers in
IANA's format (RFC 3912: read one query line, write the answer, close). The records of
:func:`iana_records` follow the layout of ``whois -h whois.iana.org <tld>``; the sponsoring
organisations are the real registries, but every person and address in them is made up and
lives under the domain passed in, so that tests can deliver the invitation mail to the
"administrative contact". A ``mode`` makes the server misbehave in the ways a real one can.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Literal

from .listening import Listeners

Mode = Literal["ok", "slow", "garbage", "huge", "refuse", "empty"]

_BANNER = (
    "% IANA WHOIS server\r\n"
    "% for more information on IANA, visit http://www.iana.org\r\n"
    "% This query returned {n} object{s}\r\n"
)

# (A-label, sponsoring organisation, city line, country line, whois server, created, changed)
_TLDS = (
    ("nl", "SIDN (Stichting Internet Domeinregistratie Nederland)", "Arnhem", "Netherlands",
     "whois.domain-registry.nl", "1986-04-25", "2025-06-20"),
    ("br", "Comite Gestor da Internet no Brasil", "Sao Paulo SP", "Brazil",
     "whois.registro.br", "1989-04-18", "2025-03-11"),
    ("jp", "Japan Registry Services Co., Ltd.", "Chiyoda-ku Tokyo", "Japan",
     "whois.jprs.jp", "1986-08-05", "2024-11-28"),
    ("uk", "Nominet UK", "Oxford", "United Kingdom",
     "whois.nic.uk", "1985-07-24", "2025-01-14"),
    ("xn--p1ai", "Coordination Center for TLD RU", "Moscow", "Russian Federation",
     "whois.tcinet.ru", "2010-05-12", "2024-09-03"),
)  # fmt: skip


def iana_record(
    a_label: str,
    organisation: str,
    city: str,
    country: str,
    whois_server: str,
    created: str,
    changed: str,
    domain: str,
) -> str:
    """One answer in IANA's layout, with made-up people whose mail goes to ``domain``."""
    tag = "rf" if a_label == "xn--p1ai" else a_label
    lines = [
        _BANNER.format(n=1, s=""),
        f"refer:        {whois_server}\r\n\r\n",
        f"domain:       {a_label.upper()}\r\n\r\n",
        f"organisation: {organisation}\r\n",
        "address:      1 Registry Street\r\n",
        f"address:      {city}\r\n",
        f"address:      {country}\r\n\r\n",
    ]
    for role, person in (("administrative", "admin"), ("technical", "tech")):
        lines += [
            f"contact:      {role}\r\n",
            f"name:         {person.title()} Contact .{tag}\r\n",
            f"organisation: {organisation}\r\n",
            f"address:      {city}\r\n",
            f"address:      {country}\r\n",
            "phone:        +31 70 123 4567\r\n",
            f"e-mail:       {person}-{tag}@{domain}\r\n\r\n",
        ]
    lines += [
        f"nserver:      NS1.DNS.{tag.upper()} 192.0.2.53 2001:db8:0:0:0:0:0:53\r\n",
        f"nserver:      NS2.DNS.{tag.upper()} 198.51.100.53\r\n\r\n",
        f"whois:        {whois_server}\r\n\r\n",
        "status:       ACTIVE\r\n",
        f"remarks:      Registration information: https://www.registry.{tag}/\r\n\r\n",
        f"created:      {created}\r\n",
        f"changed:      {changed}\r\n",
        "source:       IANA\r\n\r\n",
    ]
    return "".join(lines)


def iana_records(domain: str) -> dict[str, str]:
    """Answers for .nl, .br, .jp, .uk and .рф (xn--p1ai), contacts under ``domain``."""
    return {row[0]: iana_record(*row, domain=domain) for row in _TLDS}


NOT_FOUND = _BANNER.format(n=0, s="s") + "\r\n% No entries found for the selected source.\r\n"


class WhoisResponder:
    """An asyncio whois server on 127.0.0.1 serving ``records`` (query -> answer text).

    Unknown queries get IANA's "0 objects" answer. ``mode`` can be changed at any time:
    "slow" never answers, "garbage" sends bytes that are not text, "huge" sends far more than
    any record, "refuse" sends only a remark (a rate limit), "empty" closes at once.
    """

    def __init__(self, records: Mapping[str, str], mode: Mode = "ok") -> None:
        self.records = dict(records)
        self.mode: Mode = mode
        self.queries: list[str] = []
        self._server: asyncio.Server | None = None
        self._listeners = Listeners()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, port: int = 0) -> WhoisResponder:
        self._server = await self._listeners.listen_streams(self._serve, "127.0.0.1", port)
        return self

    async def stop(self) -> None:
        """Stop listening and close every open connection (a "slow" one, and one still
        being made, included: ``listening``)."""
        await self._listeners.close()
        self._server = None

    async def __aenter__(self) -> WhoisResponder:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            self.queries.append(line.decode("ascii", "replace").strip())
            await self._answer(self.queries[-1].lower(), reader, writer)
        except (ConnectionError, OSError):
            pass  # the client gave up; nothing to tidy but the socket
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(
        self, query: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode == "slow":
            await reader.read()  # until the client hangs up (or stop() closes us)
            return
        if self.mode == "empty":
            return
        if self.mode == "garbage":
            writer.write(bytes(range(256)) * 4)
        elif self.mode == "refuse":
            writer.write(b"% Query rate limit exceeded, try again later\r\n")
        elif self.mode == "huge":
            with contextlib.suppress(ConnectionError, OSError):
                for _ in range(64):
                    writer.write(b"remarks:      " + b"x" * 4082 + b"\r\n")
                    await writer.drain()
            return
        else:
            writer.write(self.records.get(query, NOT_FOUND).encode("utf-8"))
        await writer.drain()
