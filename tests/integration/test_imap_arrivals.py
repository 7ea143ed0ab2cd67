"""A mail that lands in the list mailbox while the bot is busy with it is read at once.

Dovecot tells a client of a new message once, with "* n EXISTS" at the end of whatever
command comes next, and a SEARCH only sees what was told before it began. aioimaplib drops
such a response when no NOOP or IDLE waits for it; the bot's IDLE then has nothing new to
push, and the mail used to wait for the end of the IDLE (``imap.idle_timeout``, an hour here).
Both windows are made to happen through seams we own (the receiver's own set-up, and the
inbox runner as the IMAP side sees it), on the real Dovecot. So is a connection that drops
while a command waits for its answer (noticed at once, not after the command's timeout), or
before the server's go-ahead for IDLE (where the bot used to wait for ever), or while the
bot makes its folders after the login.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import pytest
import pytest_asyncio
from servers import MailStack, password_for
from test_smtpsend import _arrived

from secir_bot.bridges.email.conn import close_imap, open_imap
from secir_bot.bridges.email.imap import ImapReceiver
from secir_bot.config import Config
from secir_bot.config.base import Secret
from secir_bot.health import Health, where_of
from secir_bot.model import Channel, InboxState, Outcome
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import offline_config
from secir_bot.store import Store

T = TypeVar("T")

LIST = "list@test.example"


async def deliver(stack: MailStack, config: Config, subject: str) -> None:
    """A mail to the list, through Postfix, waited for until it is in the mailbox's files.

    Another session then selects the mailbox (as an admin's mail client might), so the
    new message is \\Recent there and not in the bot's session: Dovecot would otherwise
    sometimes push "* 1 RECENT" when the bot's IDLE begins, which hid the lost EXISTS.
    """
    await aiosmtplib.send(
        f"From: alice@test.example\r\nTo: {LIST}\r\nSubject: {subject}\r\n\r\nx\r\n",
        sender="alice@test.example",
        recipients=[LIST],
        hostname="127.0.0.1",
        port=stack.smtp_port,
    )
    await wait_until(lambda: _arrived(stack, LIST, subject), 30, f"{subject!r} in the mailbox")
    password = await asyncio.to_thread(config.imap.password.read)
    other = await open_imap(config.imap, password)
    try:
        await other.select(config.imap.mailbox)
    finally:
        await close_imap(other)


class Deciding:
    """The inbox runner as the IMAP side sees it: each item dropped at once, its subject
    noted; ``before_decision`` runs before the first decision is given."""

    def __init__(self, store: Store, before_decision: Callable[[], Any] | None = None) -> None:
        self.store = store
        self.before_decision = before_decision
        self.subjects: list[str] = []

    def wake(self) -> None:
        pass

    async def decided(self, item_id: int) -> Outcome:
        if self.before_decision is not None:
            hook, self.before_decision = self.before_decision, None
            await hook()
        (item,) = [i for i in self.store.inbox.pending(Channel.EMAIL) if i.id == item_id]
        subject = item.raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
        self.subjects.append(subject)
        self.store.decide(item_id, InboxState.DROPPED, "test")
        return Outcome(InboxState.DROPPED, "test")


def list_config(mail_stack: MailStack, directory: Path) -> Config:
    """The list's config, its IMAP side straight to Dovecot."""
    config = offline_config(directory, "test.example")
    secret = directory / "imap-pw"
    secret.write_text(password_for(LIST) + "\n")
    imap = dataclasses.replace(
        config.imap,
        port=mail_stack.imap_port,
        security="plain",
        username=LIST,
        password=Secret(file=secret),
        idle_timeout=3600.0,  # no periodic look can hide a mail left unread
    )
    return dataclasses.replace(config, imap=imap)


@pytest.fixture
def config(mail_stack: MailStack, directory: Path) -> Config:
    return list_config(mail_stack, directory)


@pytest_asyncio.fixture
async def store(directory: Path) -> AsyncIterator[Store]:
    store = Store.open(directory / "store", create=True)
    yield store
    store.close()


@contextlib.asynccontextmanager
async def running(receiver: ImapReceiver) -> AsyncIterator[None]:
    task = asyncio.create_task(receiver.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _health(config: Config) -> Health:
    return Health(lambda t: None, 300.0, lambda: "", where_of(config))


async def test_a_mail_landing_between_select_and_search_is_read_without_a_push(
    mail_stack: MailStack, config: Config, store: Store
) -> None:
    """The reconnect after an outage: Postfix hands over its queue just as the bot selects."""
    late = f"late {uuid.uuid4().hex}"

    class Reconnecting(ImapReceiver):
        async def _prepare(self, imap: Any) -> None:
            await super()._prepare(imap)  # the mailbox is selected
            await deliver(mail_stack, config, late)

    intake = Deciding(store)
    receiver = Reconnecting(config, store, intake, lambda t: None, _health(config))
    async with running(receiver):
        await wait_until(lambda: late in intake.subjects, 60, "the late mail to be read")


async def test_a_mail_landing_while_the_first_is_decided_is_read_without_a_push(
    mail_stack: MailStack, config: Config, store: Store
) -> None:
    """Two mails in a row: the second lands while the first one's decision is awaited."""
    first, second = f"first {uuid.uuid4().hex}", f"second {uuid.uuid4().hex}"
    await deliver(mail_stack, config, first)
    intake = Deciding(store, lambda: deliver(mail_stack, config, second))
    receiver = ImapReceiver(config, store, intake, lambda t: None, _health(config))
    async with running(receiver):
        await wait_until(lambda: second in intake.subjects, 60, "the second mail to be read")
    assert intake.subjects.index(first) < intake.subjects.index(second)


def _imap_pids(stack: MailStack, user: str) -> list[int]:
    """Process ids of the Dovecot IMAP processes serving ``user``."""
    who = subprocess.run(
        ["doveadm", "-c", str(stack.dovecot_dir / "dovecot.conf"), "who", "-1", user],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(f) for line in who.stdout.splitlines() if "imap" in line for f in line.split()[2:3]]


async def dropped_during(mail_stack: MailStack, start: Callable[[], Awaitable[T]]) -> T:
    """Run ``start()`` with the list's IMAP server frozen, so that the command it sends is
    never answered, then kill the server: the connection drops under that command."""
    (pid,) = await asyncio.to_thread(_imap_pids, mail_stack, LIST)
    os.kill(pid, signal.SIGSTOP)
    pending = asyncio.ensure_future(start())
    for _ in range(5):
        await asyncio.sleep(0)  # sent
    os.kill(pid, signal.SIGKILL)
    return await pending


class DropsOnce(ImapReceiver):
    """A receiver whose first call of one of its steps loses the connection under it."""

    dropped = False


def dropping_once(mail_stack: MailStack, step: str) -> type[DropsOnce]:
    """A :class:`DropsOnce` whose first call of ``step`` (a method of ImapReceiver) runs
    with the server frozen, then killed (``dropped_during``); later calls run as ever."""
    own = getattr(ImapReceiver, step)

    async def first_dropped(self: DropsOnce, *args: Any) -> Any:
        if self.dropped:
            return await own(self, *args)
        self.dropped = True
        return await dropped_during(mail_stack, lambda: own(self, *args))

    return type("Dropped", (DropsOnce,), {step: first_dropped})


async def test_a_connection_lost_during_a_command_is_noticed_at_once(
    mail_stack: MailStack, config: Config, store: Store
) -> None:
    """The server goes away while a FETCH is unanswered (frozen, then killed): the bot used
    to wait for the command's timeout (two minutes) before it reconnected."""
    subject = f"dropped {uuid.uuid4().hex}"
    await deliver(mail_stack, config, subject)

    Dropped = dropping_once(mail_stack, "_size")
    intake = Deciding(store)
    receiver = Dropped(config, store, intake, lambda t: None, _health(config))
    async with running(receiver):
        await wait_until(lambda: subject in intake.subjects, 60, "the mail after the drop")
    assert receiver.dropped


async def test_a_connection_lost_before_idle_is_acknowledged_is_noticed_at_once(
    mail_stack: MailStack, config: Config, store: Store
) -> None:
    """The server goes away after the bot sent IDLE and before its "+ idling" came (frozen,
    then killed): aioimaplib waits for that answer without a deadline and is not told of the
    loss, so the bot stayed connected in name and read no mail until it was restarted."""
    subject = f"after idle {uuid.uuid4().hex}"

    Dropped = dropping_once(mail_stack, "_idle")
    intake = Deciding(store)
    receiver = Dropped(config, store, intake, lambda t: None, _health(config))
    async with running(receiver):
        await wait_until(lambda: receiver.dropped, 30, "the bot's first IDLE")
        await deliver(mail_stack, config, subject)
        await wait_until(lambda: subject in intake.subjects, 60, "the mail after the drop")


async def test_a_connection_lost_while_the_folders_are_made_is_noticed_at_once(
    mail_stack: MailStack, config: Config, store: Store
) -> None:
    """The server goes away while the bot, just logged in, makes sure of its folders (a
    server restarting at that moment): the bot used to wait for aioimaplib's command timeout
    (a minute) before it tried again. The mail sent meanwhile must not wait that long."""
    subject = f"after prepare {uuid.uuid4().hex}"

    Dropped = dropping_once(mail_stack, "_prepare")
    intake = Deciding(store)
    receiver = Dropped(config, store, intake, lambda t: None, _health(config))
    async with running(receiver):
        await wait_until(lambda: receiver.dropped, 30, "the bot's first login")
        await deliver(mail_stack, config, subject)
        # Well under the minute the bot used to wait, generous for a loaded machine.
        await wait_until(lambda: subject in intake.subjects, 30, "the mail after the drop")
