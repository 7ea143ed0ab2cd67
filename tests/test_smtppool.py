"""SMTP sessions kept between outbox rows (issue 11): fewer connections, no row lost or doubled.

The email bridge's ``SmtpSender.deliver`` keeps its session for ``smtp.keep_open`` seconds,
so the rows of a post (one per recipient group) share it. Against the real Postfix (through
a relay of the test's own that counts connections, or directly when Postfix is restarted
between rows) and against aiosmtpd, which can close a kept session with a 421 as a server
does when its idle timeout ends, or refuse a transaction on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP as SMTPServer
from servers import MailStack
from test_smtpsend import USERS, Relay, Scripted, _all_arrived, _mail

from secir_bot.bridges.email.smtp import SmtpSender
from secir_bot.config import Config
from secir_bot.errors import TransientDeliveryError
from secir_bot.health import Health, where_of
from secir_bot.model import Channel
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import offline_config
from secir_bot.store import NewDelivery, OutboxRow, Store


class Counting(Relay):
    """A TCP relay to a server that passes everything through (and counts connections)."""

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(pipe(c_reader, s_writer), pipe(s_reader, c_writer))


def _config(directory: Path, port: int, **smtp: object) -> Config:
    config = offline_config(directory, "test.example")
    cfg = dataclasses.replace(
        config.smtp, host="127.0.0.1", port=port, security="plain", max_recipients=3, **smtp
    )
    return dataclasses.replace(config, smtp=cfg)


@contextlib.asynccontextmanager
async def _sender(config: Config) -> AsyncIterator[tuple[SmtpSender, Store]]:
    store = Store.open(config.store_path, create=True)
    sender = SmtpSender(config, store, Health(lambda t: None, 300.0, lambda: "", where_of(config)))
    try:
        yield sender, store
    finally:
        await sender.close()
        store.close()


def _row(store: Store, payload: bytes, recipients: tuple[str, ...] = USERS) -> OutboxRow:
    store.outbox.enqueue(
        NewDelivery(
            channel=Channel.EMAIL,
            target="list",
            kind="post",
            payload=payload,
            recipients=recipients,
        )
    )
    return store.outbox.pending(Channel.EMAIL)[-1]


def _queue_empty(stack: MailStack) -> bool:
    queue = stack.postfix_dir / "queue"
    places = ("incoming", "active", "deferred")
    return not any(path.is_file() for d in places for path in queue.glob(f"{d}/**/*"))


# -- the real Postfix -------------------------------------------------------------------------


async def test_the_rows_of_a_post_share_one_session_with_postfix(
    mail_stack: MailStack, directory: Path
) -> None:
    relay = Counting(mail_stack.smtp_port)
    port = await relay.start()
    subjects = [f"kept {n} {uuid.uuid4().hex}" for n in range(3)]
    try:
        async with _sender(_config(directory, port)) as (sender, store):
            for subject in subjects:  # three rows (groups), two transactions each
                receipt = await sender.deliver(_row(store, _mail(subject)))
                assert receipt.result == f"sent to {len(USERS)} recipient(s)"
            assert relay.connections == 1  # one session for the three rows
            assert (sender.sessions.opened, sender.sessions.reused) == (1, 2)
    finally:
        await relay.stop()
    for subject in subjects:
        await _all_arrived(mail_stack, USERS, subject)  # each recipient once


async def test_a_postfix_restart_between_rows_loses_and_doubles_nothing(
    mail_stack: MailStack, directory: Path
) -> None:
    before, after = (f"{when} restart {uuid.uuid4().hex}" for when in ("before", "after"))
    async with _sender(_config(directory, mail_stack.smtp_port)) as (sender, store):
        await sender.deliver(_row(store, _mail(before)))
        ((kept, _),) = sender.sessions._idle
        # Stopped only once its queue is empty: a mail still in the queue may be delivered
        # again after the restart (Postfix's own at-least-once, not the bot's doing).
        await _all_arrived(mail_stack, USERS, before)
        await wait_until(lambda: _queue_empty(mail_stack), 30, "Postfix's queue to empty")
        await asyncio.to_thread(mail_stack.stop_postfix)
        await wait_until(lambda: not kept.is_connected, 30, "the kept session to be closed")
        await asyncio.to_thread(mail_stack.start_postfix)

        receipt = await sender.deliver(_row(store, _mail(after)))

        assert receipt.result == f"sent to {len(USERS)} recipient(s)"
        assert sender.sessions.opened == 2
    await _all_arrived(mail_stack, USERS, after)
    await _all_arrived(mail_stack, USERS, before)


# -- aiosmtpd, answering as each test needs ---------------------------------------------------


class Sessions:
    """The server side's connections, to count them and to close them as a server would."""

    def __init__(self, handler: Scripted) -> None:
        self.handler = handler
        self.open: list[SMTPServer] = []
        self.made = 0

    def __call__(self) -> SMTPServer:
        self.made += 1
        server = SMTPServer(self.handler, hostname="mx.test.example")
        self.open.append(server)
        return server

    def hang_up(self, line: bytes) -> None:
        """Every connection: ``line`` (a 421) and closed, as at the server's idle timeout."""
        for server in self.open:
            transport = server.transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                transport.write(line)
                transport.close()

    @property
    def connected(self) -> int:
        return sum(s.transport is not None and not s.transport.is_closing() for s in self.open)


@pytest_asyncio.fixture
async def aiosmtpd_server() -> AsyncIterator[tuple[Sessions, int]]:
    sessions = Sessions(Scripted())
    server = await asyncio.get_running_loop().create_server(sessions, "127.0.0.1", 0)
    try:
        yield sessions, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


PEOPLE = ("m0@test.example", "m1@test.example")


async def test_a_kept_session_ended_by_a_421_is_replaced_and_the_row_sent_once(
    aiosmtpd_server: tuple[Sessions, int], directory: Path
) -> None:
    sessions, port = aiosmtpd_server
    async with _sender(_config(directory, port)) as (sender, store):
        await sender.deliver(_row(store, b"Subject: 1\r\n\r\none\r\n", PEOPLE))
        sessions.hang_up(b"421 4.4.2 mx.test.example Error: timeout exceeded\r\n")

        await sender.deliver(_row(store, b"Subject: 2\r\n\r\ntwo\r\n", PEOPLE))

        assert sessions.handler.delivered == [list(PEOPLE), list(PEOPLE)]
        assert sessions.made == 2


async def test_a_421_on_a_kept_session_fails_the_row_for_a_retry_that_sends_it_once(
    aiosmtpd_server: tuple[Sessions, int], directory: Path
) -> None:
    """The server closes just after the check: nothing is recorded, the retry sends it."""
    sessions, port = aiosmtpd_server
    handler = sessions.handler
    async with _sender(_config(directory, port)) as (sender, store):
        await sender.deliver(_row(store, b"Subject: 1\r\n\r\none\r\n", PEOPLE))
        handler.mail = "421 4.3.2 mx.test.example shutting down"
        row = _row(store, b"Subject: 2\r\n\r\ntwo\r\n", PEOPLE)

        with pytest.raises(TransientDeliveryError, match="421"):
            await sender.deliver(row)
        assert store.outbox.pending(Channel.EMAIL)[-1].done == ()
        assert not sender.sessions._idle  # a session that failed is not kept
        handler.mail = "250 OK"
        await sender.deliver(store.outbox.pending(Channel.EMAIL)[-1])

        assert handler.delivered == [list(PEOPLE), list(PEOPLE)]
        assert sessions.made == 2


async def test_an_idle_session_is_closed_after_keep_open(
    aiosmtpd_server: tuple[Sessions, int], directory: Path
) -> None:
    sessions, port = aiosmtpd_server
    async with _sender(_config(directory, port, keep_open=0.2)) as (sender, store):
        await sender.deliver(_row(store, b"Subject: 1\r\n\r\none\r\n", PEOPLE))
        assert len(sender.sessions._idle) == 1

        await wait_until(lambda: sessions.connected == 0, 30, "the idle session to be closed")
        assert not sender.sessions._idle


async def test_keep_open_0_closes_each_session_after_its_row(
    aiosmtpd_server: tuple[Sessions, int], directory: Path
) -> None:
    sessions, port = aiosmtpd_server
    async with _sender(_config(directory, port, keep_open=0.0)) as (sender, store):
        for n in range(2):
            await sender.deliver(_row(store, b"Subject: %d\r\n\r\nx\r\n" % n, PEOPLE))
            assert not sender.sessions._idle
        assert sessions.made == 2 and sessions.handler.delivered == [list(PEOPLE)] * 2
