"""The benchmark's lean SMTP sink (scripts/benchkit/leansink.py) speaks SMTP as an MTA does.

It is the benchmark's measuring instrument for the fan-out: what it records must be what
the client sent, pipelined or not, with dot-stuffed lines restored.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benchkit.sink import Sink  # type: ignore[import-not-found]  # scripts/, not a package

MESSAGE = (
    b"From: a@x.test\r\nTo: list@x.test\r\nMessage-ID: <m1@x.test>\r\nSubject: s\r\n\r\n"
    b".starts with a dot\r\n..two dots\r\nlast line\r\n"
)


async def test_a_real_client_hands_over_a_message_to_several_recipients() -> None:
    sink = await Sink().start()
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port) as smtp:
            assert smtp.supports_extension("pipelining")
            await smtp.sendmail("a@x.test", ["b@x.test", "C@x.test", "d@x.test"], MESSAGE)
            await smtp.sendmail("a@x.test", ["e@x.test"], MESSAGE.replace(b"<m1", b"<m2"))
        first, second = sink.transactions
        assert first.recipients == ["b@x.test", "c@x.test", "d@x.test"]
        assert first.content == MESSAGE  # the client's dot-stuffing undone
        assert first.message_id == "<m1@x.test>" and second.message_id == "<m2@x.test>"
        assert second.recipients == ["e@x.test"]
        assert first.mail_at <= first.rcpt_at[0] <= first.rcpt_at[-1] <= first.data_at
        assert first.connection == second.connection
    finally:
        await sink.stop()


async def test_a_pipelined_envelope_gets_every_reply_in_order() -> None:
    sink = await Sink().start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.write(b"EHLO c.test\r\n")
        ehlo = [await reader.readline()]
        while ehlo[-1][3:4] == b"-":
            ehlo.append(await reader.readline())
        assert any(b"PIPELINING" in line for line in ehlo)
        # RCPT before MAIL is refused; then one envelope in a single write.
        writer.write(
            b"RCPT TO:<early@x.test>\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
            b"RCPT TO:<c@x.test>\r\nDATA\r\n"
        )
        replies = [await reader.readline() for _ in range(5)]
        assert [r[:3] for r in replies] == [b"503", b"250", b"250", b"250", b"354"]
        writer.write(b"Message-ID: <p@x.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert (await reader.readline()).startswith(b"250 ")
        assert (await reader.readline()).startswith(b"221 ")
        assert await reader.read() == b""  # the sink closed the connection after QUIT
        writer.close()
        (kept,) = sink.transactions
        assert kept.recipients == ["b@x.test", "c@x.test"]
        assert kept.content == b"Message-ID: <p@x.test>\r\n\r\nbody\r\n"
    finally:
        await sink.stop()
