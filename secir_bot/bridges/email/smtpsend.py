"""Handing one outbox row's mail to the SMTP server: batches, pipelining, connections.

A row is one payload for many recipients. It goes out in transactions of at most
``smtp.max_recipients`` recipients, over one connection (reused for every batch of the
row) or over up to ``smtp.connections`` connections at once. aiosmtplib opens each
connection (TLS, STARTTLS, certificate checks, EHLO, AUTH), as before.

aiosmtplib sends RCPT commands one at a time, a round trip each (0.53 s of a 1000-member
post, docs/performance.md), and cannot pipeline: its protocol parses one reply per command
and drops data that arrives while a reply waits to be read. So when the server advertises
PIPELINING (RFC 2920) and ``smtp.pipelining`` is on, the envelope of each transaction
(MAIL FROM and every RCPT TO) is written in one go on aiosmtplib's own connection, through
a small reply reader that takes the connection's transport over for the transaction and
hands it back afterwards; DATA follows once every envelope reply is read. Without
PIPELINING, aiosmtplib's ``sendmail`` does the transaction as before.

What each transaction did is reported to ``on_batch`` (the caller records progress, so a
retry skips recipients already accepted); a failure of the session or of a transaction is
raised as aiosmtplib's own exception, exactly as ``sendmail`` raises it, after the other
connections have finished the transaction they were in (never cut off between the server's
acceptance and its recording).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aiosmtplib
from aiosmtplib.email import quote_address

from secir_bot.bridges.email.smtppool import Opener, SessionPool

log = logging.getLogger(__name__)

# Told what each transaction did; what it returns (if anything) is awaited before the next.
OnBatch = Callable[[Sequence[str], Mapping[str, aiosmtplib.SMTPResponse]], Awaitable[None] | None]
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_MAX_LINE = 8192  # longer reply lines are not SMTP


# aiosmtplib's quoting parses each address with ``email.utils.parseaddr``: ~18 µs each, so
# ~2 ms of every relayed mail at 100 members went to quoting the same roster again. The
# result depends on the address alone; the roster's addresses fit in the cache.
@functools.lru_cache(maxsize=8192)
def _quoted(address: str) -> bytes:
    return quote_address(address).encode("ascii")


def batches(recipients: Sequence[str], size: int) -> list[list[str]]:
    return [list(recipients[i : i + size]) for i in range(0, len(recipients), size)]


def data_bytes(payload: bytes) -> bytes:
    """The DATA section for ``payload``: CRLF line ends, leading dots doubled, the end mark."""
    text = _LINE_ENDINGS.sub(b"\r\n", payload)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    return _LEADING_DOT.sub(b"..", text) + b".\r\n"


class _Replies(asyncio.Protocol):
    """Reads SMTP replies (multi-line ones joined) off a connection, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._lines: list[bytes] = []
        self._wake = asyncio.Event()
        self.lost: Exception | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        while (end := self._buffer.find(b"\n")) != -1:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if len(line) > _MAX_LINE or not line[:3].isdigit():
                self.lost = aiosmtplib.SMTPResponseException(-1, "malformed SMTP reply")
                break
            self._lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
                self._replies.append(aiosmtplib.SMTPResponse(int(line[:3]), text))
                self._lines = []
        if len(self._buffer) > _MAX_LINE:
            self.lost = aiosmtplib.SMTPResponseException(-1, "SMTP reply line too long")
        self._wake.set()

    def eof_received(self) -> bool:
        self.connection_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._wake.set()

    async def replies(self, count: int, wait: float) -> list[aiosmtplib.SMTPResponse]:
        """The next ``count`` replies; each wait for more of them may take ``wait`` seconds.

        One wait per arrival rather than per reply: a pipelined envelope's replies come in
        a few segments, and a deadline per reply was a tenth of the transaction's Python.
        """
        while len(self._replies) < count:
            if self.lost is not None:
                raise self.lost
            self._wake.clear()
            async with asyncio.timeout(wait):
                await self._wake.wait()
        return [self._replies.popleft() for _ in range(count)]

    async def reply(self, wait: float) -> aiosmtplib.SMTPResponse:
        return (await self.replies(1, wait))[0]


async def _pipelined(
    smtp: aiosmtplib.SMTP, sender: str, batch: Sequence[str], payload: bytes, wait: float
) -> dict[str, aiosmtplib.SMTPResponse]:
    """One transaction with its envelope pipelined; errors as ``SMTP.sendmail`` has them."""
    lines = [b"MAIL FROM:" + _quoted(sender)]
    if smtp.supports_extension("size"):
        # RFC 1870: the octets as transmitted, line ends included (as aiosmtplib counts).
        size = len(_LINE_ENDINGS.sub(b"\r\n", payload)) + (not payload.endswith(b"\n")) * 2
        lines[0] += b" SIZE=%d" % size
    lines += [b"RCPT TO:" + _quoted(r) for r in batch]
    if any(_CONTROL.search(line) for line in lines):
        raise ValueError("Command arg contains a prohibited control character")
    transport = smtp.transport
    if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    theirs = transport.get_protocol()
    reader = _Replies()
    transport.set_protocol(reader)
    try:
        try:
            transport.write(b"".join(line + b"\r\n" for line in lines))
            mail, *rcpts = await reader.replies(len(lines), wait)
            errors = {
                r: resp for r, resp in zip(batch, rcpts, strict=True) if resp.code not in (250, 251)
            }
            if mail.code != 250 or len(errors) == len(batch):
                transport.write(b"RSET\r\n")
                await reader.reply(wait)
                if mail.code != 250:
                    raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
                refusals = [
                    aiosmtplib.SMTPRecipientRefused(e.code, e.message, r) for r, e in errors.items()
                ]
                raise aiosmtplib.SMTPRecipientsRefused(refusals)
            transport.write(b"DATA\r\n")
            start = await reader.reply(wait)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            transport.write(data_bytes(payload))
            done = await reader.reply(wait)
            if done.code != 250:
                raise aiosmtplib.SMTPDataError(done.code, done.message)
            return errors
        except TimeoutError:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
    except Exception as exc:
        # A lost, silent or garbled server leaves the session out of step: close it rather
        # than risk pairing a late reply with a later command (QUIT included).
        if reader.lost is not None or isinstance(exc, aiosmtplib.SMTPTimeoutError):
            smtp.close()
        raise
    finally:
        if not transport.is_closing():
            transport.set_protocol(theirs)


async def send(
    sessions: SessionPool | Opener,
    sender: str,
    recipients: Sequence[str],
    payload: bytes,
    on_batch: OnBatch,
    *,
    max_recipients: int,
    connections: int = 1,
    pipelining: bool = True,
    reply_timeout: float = 60.0,
) -> None:
    """Send ``payload`` to ``recipients`` in batches; see the module docstring.

    ``reply_timeout`` is how long each server reply may take (``smtp.timeout``).
    ``sessions`` gives logged-in aiosmtplib sessions: a ``SessionPool`` (sessions kept
    between rows), or a function that opens one (each closed at the end). A session is
    taken once per connection, the first time before anything else (its errors propagate
    as they are). Extra connections that cannot be opened are done without: the batches go
    over the connections that are open. A session that went through its batches is given
    back to the pool; one that failed is closed.
    """
    pool = sessions if isinstance(sessions, SessionPool) else SessionPool(sessions)
    queue = deque(batches(recipients, max_recipients))
    if not queue:
        return
    first = await pool.acquire()
    failures: list[BaseException] = []

    async def worker(smtp: aiosmtplib.SMTP | None) -> None:
        if smtp is None:
            try:
                smtp = await pool.acquire()
            except Exception as exc:  # the other connections carry on
                log.info("an extra SMTP connection could not be opened: %s", exc)
                return
        try:
            if smtp.is_ehlo_or_helo_needed:
                # Without TLS or a login, aiosmtplib greets only at the first command; the
                # extensions (PIPELINING, SIZE) must be known before the first transaction.
                await smtp.ehlo()
            while queue and not failures:
                batch = queue.popleft()
                try:
                    if pipelining and smtp.supports_extension("pipelining"):
                        errors = await _pipelined(smtp, sender, batch, payload, reply_timeout)
                    else:
                        errors, _ = await smtp.sendmail(sender, batch, payload)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    errors = {
                        r.recipient: aiosmtplib.SMTPResponse(r.code, r.message)
                        for r in exc.recipients
                    }
                recorded = on_batch(batch, errors)
                if inspect.isawaitable(recorded):
                    await recorded
        except Exception as exc:
            failures.append(exc)
            await pool.discard(smtp)
        else:
            await pool.release(smtp)

    extra = min(connections, len(queue)) - 1
    await asyncio.gather(worker(first), *(worker(None) for _ in range(extra)))
    if failures:
        raise failures[0]
