"""A loopback SMTP sink that records when each command of each transaction completed.

In the benchmark's own event loop: every RCPT is answered 250 at once and every DATA is
kept in memory with the time its 250 went out. The fan-out figures come from these times:
the last DATA 250 of a post is the moment the list's mail was fully handed over. The
protocol is ``leansink.LeanSmtp`` (little CPU per command, as a mail server in C), or
aiosmtpd as in the runs before 2026-12-03 13:00 UTC (``lean=False``, ``--sink aiosmtpd``).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from .leansink import LeanSmtp

HOSTNAME = "sink.bench.test"


@dataclass
class Transaction:
    """One MAIL ... DATA exchange as the sink saw it (wall-clock times, ``time.time()``)."""

    connection: str  # the client's address and port: one per SMTP connection
    mail_at: float
    rcpt_at: list[float] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    data_at: float = 0.0
    size: int = 0
    message_id: str = ""
    content: bytes = b""


class Sink:
    """Accepts every recipient; keeps every message (the list's mail) with its timings."""

    def __init__(self, *, lean: bool = True) -> None:
        self.lean = lean
        self.port = 0
        self.transactions: list[Transaction] = []
        self._open: dict[int, Transaction] = {}
        self._server: asyncio.Server | None = None
        self.changed = asyncio.Event()
        # aiosmtpd logs every command at INFO: thousands of lines per post at N=1000.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

    async def start(self, host: str = "127.0.0.1") -> Sink:
        loop = asyncio.get_running_loop()
        if self.lean:
            self._server = await loop.create_server(lambda: LeanSmtp(self, HOSTNAME), host, 0)
        else:
            self._server = await loop.create_server(
                lambda: SMTP(self, hostname=HOSTNAME, loop=loop, data_size_limit=None), host, 0
            )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- what LeanSmtp reports --------------------------------------------------------

    def mail(self, connection: str, key: int, at: float) -> None:
        self._open[key] = Transaction(connection, at)

    def rcpt(self, key: int, address: str, at: float) -> None:
        record = self._open.get(key)
        if record is not None:
            record.rcpt_at.append(at)
            record.recipients.append(address.lower())

    def data(self, connection: str, key: int, content: bytes, at: float) -> None:
        record = self._open.pop(key, None) or Transaction(connection, at)
        self._keep(record, content, at)

    def _keep(self, record: Transaction, content: bytes, at: float) -> None:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
        record.data_at = at
        record.size = len(content)
        record.message_id = str(headers.get("Message-ID", "")).strip()
        record.content = content
        self.transactions.append(record)
        self.changed.set()

    # -- aiosmtpd's handler ---------------------------------------------------------

    @staticmethod
    def _peer(session: Session) -> str:
        peer: Any = session.peer
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # Offer PIPELINING as Postfix and most MTAs do (aiosmtpd reads pipelined commands
        # line by line but does not say so), so that the bot's sender may use it.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        self._open[id(envelope)] = Transaction(self._peer(session), time.time())
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        record = self._open.get(id(envelope))
        if record is not None:
            record.rcpt_at.append(time.time())
            record.recipients.append(address.lower())
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time()
        record = self._open.pop(id(envelope), None)
        if record is None:
            record = Transaction(self._peer(session), now, recipients=list(envelope.rcpt_tos))
        self._keep(record, envelope.original_content or b"", now)
        return "250 OK: kept"

    # -- reading what arrived ---------------------------------------------------------

    def messages_since(self, since: float) -> dict[str, list[Transaction]]:
        """Transactions begun after ``since``, grouped by Message-ID, in arrival order."""
        out: dict[str, list[Transaction]] = {}
        for t in self.transactions:
            if t.mail_at >= since:
                out.setdefault(t.message_id, []).append(t)
        return out

    async def wait_message(
        self, since: float, recipients: int, timeout: float, what: str
    ) -> list[Transaction]:
        """The transactions of the first message begun after ``since`` that has reached
        ``recipients`` recipients; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            for transactions in self.messages_since(since).values():
                if len({r for t in transactions for r in t.recipients}) >= recipients:
                    return transactions
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = {
                    m: sum(len(t.recipients) for t in ts)
                    for m, ts in self.messages_since(since).items()
                }
                raise TimeoutError(f"sink waited {timeout:.0f}s for {what}; got {got}")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass

    def forget(self) -> None:
        """Drop what was kept (the contents add up at 1000 members)."""
        self.transactions.clear()
