"""The benchmark's SMTP sink as a bare asyncio protocol: the least work per command.

aiosmtpd parses, dispatches and logs each command through a chain of coroutines: about
0.25 ms of the benchmark's CPU per recipient, 0.25 s for each post to 1000 members, taken
from the two cores the bot and gpg need (docs/performance.md, "How it is measured"). A
mail server written in C costs a fraction of that. This sink answers what the bot sends
(EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) as a plain MTA would, offers PIPELINING,
answers every command of a pipelined batch in one write, and records the same times as
the aiosmtpd sink (``sink.Sink``): MAIL, each RCPT and the end of DATA.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Protocol


class Recorder(Protocol):
    """What the sink reports to (``sink.Sink``)."""

    def mail(self, connection: str, key: int, at: float) -> None: ...
    def rcpt(self, key: int, address: str, at: float) -> None: ...
    def data(self, connection: str, key: int, content: bytes, at: float) -> None: ...


def _address(argument: bytes) -> str:
    """The address of ``FROM:<a> ...`` / ``TO:<a> ...`` (without the brackets)."""
    start, end = argument.find(b"<"), argument.find(b">")
    if start < 0 or end < start:
        return argument.partition(b":")[2].strip().decode("utf-8", "replace")
    return argument[start + 1 : end].decode("utf-8", "replace")


_transactions = itertools.count(1)


class LeanSmtp(asyncio.Protocol):
    """One SMTP connection to the sink."""

    def __init__(self, recorder: Recorder, hostname: str) -> None:
        self.recorder = recorder
        self.hostname = hostname.encode()
        self.buffer = bytearray()
        self.in_data = False
        self.key = 0  # the open transaction (0: none)
        self.peer = ""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.write(b"220 " + self.hostname + b" ESMTP sink\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while not self._closing(replies):
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0 and self.buffer.startswith(b".\r\n"):
                    content, consumed = b"", 3  # an empty message
                elif end < 0:
                    break
                else:
                    content, consumed = bytes(self.buffer[: end + 2]), end + 5
                del self.buffer[:consumed]
                self.in_data = False
                body = content.replace(b"\r\n..", b"\r\n.")
                if body.startswith(b".."):
                    body = body[1:]
                self.recorder.data(self.peer, self.key, body, time.time())
                self.key = 0
                replies.append(b"250 OK: kept")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            replies.append(self._command(line))
        if replies and self.transport is not None:
            self.transport.write(b"\r\n".join(replies) + b"\r\n")
            if replies[-1].startswith(b"221"):
                self.transport.close()

    def _closing(self, replies: list[bytes]) -> bool:
        return bool(replies) and replies[-1].startswith(b"221")

    def _command(self, line: bytes) -> bytes:
        verb, _, argument = line.partition(b" ")
        verb = verb.upper()
        if verb == b"RCPT":
            if not self.key:
                return b"503 5.5.1 Error: need MAIL command"
            self.recorder.rcpt(self.key, _address(argument), time.time())
            return b"250 OK"
        if verb == b"MAIL":
            self.key = next(_transactions)
            self.recorder.mail(self.peer, self.key, time.time())
            return b"250 OK"
        if verb == b"DATA":
            if not self.key:
                return b"503 5.5.1 Error: need RCPT command"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>"
        if verb == b"EHLO":
            return b"250-" + self.hostname + b"\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8"
        if verb == b"HELO":
            return b"250 " + self.hostname
        if verb == b"RSET":
            self.key = 0
            return b"250 OK"
        if verb == b"NOOP":
            return b"250 OK"
        if verb == b"QUIT":
            return b"221 Bye"
        return b"502 5.5.2 Error: command not recognized"
