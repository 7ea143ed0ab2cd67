"""Deferred syncs (issue 11): commits off the event loop's clock, on the disk where it matters.

The running bot commits with ``synchronous = NORMAL`` (``Store.defer_syncs``) and syncs the
WAL in a worker thread (``Store.durable``) before anything that depends on a commit leaves
the machine. Here: what ``durable`` syncs and how often; that a commit survives a killed
process without any sync (what NORMAL promises); that the outbox and the SMTP sender never
send what rests on a commit that is not on the disk yet; and that a mail leaves the list's
INBOX on the real Dovecot only once it and its decision are on the disk. The server is aiosmtpd
(``Scripted`` from test_smtpsend.py); the store's fsync is counted through its own seam
(``Store.fsync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from servers import MailStack, password_for
from test_smtpsend import Scripted, _arrived

from secir_bot.bridges import Receipt
from secir_bot.bridges.email.imap import ImapReceiver
from secir_bot.bridges.email.smtp import SmtpSender
from secir_bot.config.base import Secret
from secir_bot.health import Health, where_of
from secir_bot.model import Channel, InboxState, Outcome
from secir_bot.outbox import Outbox
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import offline_config
from secir_bot.store import DB_NAME, NewDelivery, OutboxRow, Store


@pytest.fixture
def store(directory: Path) -> Iterator[Store]:
    store = Store.open(directory / "store", create=True)
    yield store
    store.close()


class Syncs:
    """Counts the store's fsyncs (and checks each is of the WAL that exists), then does them."""

    def __init__(self, store: Store) -> None:
        self.real = store.fsync
        self.paths: list[Path] = []
        store.fsync = self

    def __call__(self, path: Path) -> None:
        assert path.exists(), f"{path} is not the store's WAL"
        self.paths.append(path)
        self.real(path)


def _synchronous(store: Store) -> int:
    return int(store.db.execute("PRAGMA synchronous").fetchone()[0])


async def test_durable_syncs_the_wal_once_for_all_commits_before_it(store: Store) -> None:
    assert _synchronous(store) == 2 and not store.unsynced  # FULL until deferred
    store.defer_syncs()
    assert _synchronous(store) == 1  # NORMAL
    syncs = Syncs(store)

    await store.durable()
    assert syncs.paths == []  # nothing committed since: nothing to sync

    store.kv.put("a", "1")
    store.kv.put("b", "2")
    assert store.unsynced
    await asyncio.gather(store.durable(), store.durable(), store.durable())

    assert syncs.paths == [store.directory / f"{DB_NAME}-wal"]  # one sync, shared
    assert not store.unsynced
    await store.durable()
    assert len(syncs.paths) == 1


async def test_without_deferred_syncs_durable_has_nothing_to_do(store: Store) -> None:
    syncs = Syncs(store)
    store.kv.put("a", "1")  # synced by SQLite itself (FULL)
    assert not store.unsynced
    await store.durable()
    assert syncs.paths == []


def test_a_deferred_commit_survives_a_killed_process(directory: Path) -> None:
    """NORMAL loses nothing when the process dies (only a machine crash can undo commits)."""
    Store.open(directory / "store", create=True).close()
    child = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from secir_bot.store import Store\n"
        "store = Store.open(Path(sys.argv[1]))\n"
        "store.defer_syncs()\n"
        "store.kv.put('kept', 'yes')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(directory / "store")], check=False)
    assert done.returncode == -signal.SIGKILL
    store = Store.open(directory / "store")
    try:
        assert store.kv.get("kept") == "yes"
    finally:
        store.close()


# -- nothing leaves before what it rests on is on the disk ----------------------------------


class Watching:
    """A bridge (our seam) that notes, at each delivery, whether the store had unsynced
    commits."""

    channel = Channel.EMAIL

    def __init__(self, store: Store) -> None:
        self.store = store
        self.unsynced_at_send: list[bool] = []

    async def run(self) -> None:
        pass

    async def deliver(self, row: OutboxRow) -> Receipt:
        self.unsynced_at_send.append(self.store.unsynced)
        return Receipt("sent")

    async def close(self) -> None:
        pass


def _delivery(payload: bytes = b"x", recipients: tuple[str, ...] = ("m@nic.test",)) -> NewDelivery:
    return NewDelivery(
        channel=Channel.EMAIL, target="list", kind="post", payload=payload, recipients=recipients
    )


async def test_the_outbox_sends_a_row_only_once_its_commit_is_on_disk(
    store: Store, directory: Path
) -> None:
    store.defer_syncs()
    bridge = Watching(store)
    config = offline_config(directory, "nic.test")
    outbox = Outbox(store, {Channel.EMAIL: bridge}, config.delivery, lambda t: _delivery(), "!c")
    store.outbox.enqueue(_delivery())
    store.outbox.enqueue(_delivery())

    await outbox.drain(Channel.EMAIL)

    assert bridge.unsynced_at_send == [False, False]
    assert not store.unsynced  # the deliveries' records too
    assert store.outbox.pending(Channel.EMAIL) == []


class Checking(Scripted):
    """Scripted, noting at each MAIL whether the store had unsynced commits."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.unsynced_at_mail: list[bool] = []

    async def handle_MAIL(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.unsynced_at_mail.append(self.store.unsynced)
        return await super().handle_MAIL(server, session, envelope, address, options)


@pytest_asyncio.fixture
async def checking(store: Store) -> AsyncIterator[tuple[Checking, int]]:
    handler = Checking(store)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(handler, hostname="mx.nic.test"), "127.0.0.1", 0
    )
    try:
        yield handler, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_each_smtp_batch_is_recorded_on_disk_before_the_next(
    store: Store, directory: Path, checking: tuple[Checking, int]
) -> None:
    handler, port = checking
    config = offline_config(directory, "nic.test")
    smtp = dataclasses.replace(config.smtp, port=port, security="plain", max_recipients=2)
    config = dataclasses.replace(config, smtp=smtp)
    store.defer_syncs()
    people = tuple(f"m{i}@nic.test" for i in range(5))
    store.outbox.enqueue(_delivery(b"Subject: x\r\n\r\nhello\r\n", people))
    await store.durable()  # as the outbox does before it delivers
    sender = SmtpSender(config, store, Health(lambda t: None, 300.0, lambda: "", where_of(config)))
    try:
        (row,) = store.outbox.pending(Channel.EMAIL)
        await sender.deliver(row)
    finally:
        await sender.close()

    assert handler.delivered == [list(people[:2]), list(people[2:4]), list(people[4:])]
    assert handler.unsynced_at_mail == [False, False, False]
    assert not store.unsynced


# -- the IMAP move (the acknowledgement) waits for the mail's commits: the real Dovecot ----


class Deciding:
    """The inbox runner as the IMAP side sees it (our seam): each item decided at once, in a
    commit of its own, as the real runner does."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def wake(self) -> None:
        pass

    async def decided(self, item_id: int) -> Outcome:
        self.store.decide(item_id, InboxState.DROPPED, "test")
        return Outcome(InboxState.DROPPED, "test")


class Watched(ImapReceiver):
    """The receiver, noting at each move whether the store had unsynced commits."""

    unsynced_at_move: list[bool]

    async def _move(self, imap: Any, uid: str, folder: str) -> None:
        self.unsynced_at_move.append(self.store.unsynced)
        await super()._move(imap, uid, folder)


async def test_a_mail_is_moved_out_of_the_inbox_only_once_its_commits_are_on_disk(
    mail_stack: MailStack, store: Store, directory: Path
) -> None:
    config = offline_config(directory, "test.example")
    secret = directory / "imap-pw"
    secret.write_text(password_for("list@test.example") + "\n")
    imap = dataclasses.replace(
        config.imap,
        port=mail_stack.imap_port,
        security="plain",
        username="list@test.example",
        password=Secret(file=secret),
    )
    config = dataclasses.replace(config, imap=imap)
    subject = f"durable {uuid.uuid4().hex}"
    await aiosmtplib.send(
        f"From: alice@test.example\r\nTo: list@test.example\r\nSubject: {subject}\r\n\r\nx\r\n",
        sender="alice@test.example",
        recipients=["list@test.example"],
        hostname="127.0.0.1",
        port=mail_stack.smtp_port,
    )
    await wait_until(lambda: _arrived(mail_stack, "list@test.example", subject), 30, "the mail")
    store.defer_syncs()
    health = Health(lambda t: None, 300.0, lambda: "", where_of(config))
    receiver = Watched(config, store, Deciding(store), lambda t: None, health)
    receiver.unsynced_at_move = []
    running = asyncio.create_task(receiver.run())
    try:
        await wait_until(lambda: receiver.unsynced_at_move, 30, "the mail to be moved")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    assert receiver.unsynced_at_move[0] is False
