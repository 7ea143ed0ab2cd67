"""A server goes away and comes back: the bot keeps running, catches up, and tells the admins.

Each test has a server of its own to stop (the session's are shared): a Synapse restarted on
the same directory and port, so users, rooms and devices survive the outage; or a Dovecot or
Postfix restarted on the same ports, mailboxes and queue. The outage notice threshold is one
second here (five minutes by default). The IMAP tests give the bot an IDLE of 300 s: a mail
it was not told of would wait that long, so their 30 s waits fail rather than hide it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import aioimaplib
import pytest
import pytest_asyncio
from servers import MAIL_USERS, MailStack, TestCA
from test_smtpsend import _arrived
from worlds import world_on

from secir_bot.app import App
from secir_bot.bridges.email.imap import ImapReceiver
from secir_bot.model import Channel
from secir_bot.sandbox.operators import SeenEvent, wait_until
from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import World, notices


@pytest_asyncio.fixture
async def own_world(mail_stack: MailStack) -> AsyncIterator[tuple[World, Path]]:
    root = Path(tempfile.mkdtemp(prefix="o"))
    hs = await asyncio.to_thread(Synapse.start, root / "hs")
    world = world_on(hs, mail_stack, root / "w")
    try:
        yield world, root
    finally:
        await world.close()
        world.synapse.stop()
        shutil.rmtree(root, ignore_errors=True)


QUICK_NOTICE = "outage_notice_after = 1"


@pytest.fixture
def own_mail(test_ca: TestCA) -> Iterator[MailStack]:
    with MailStack.start(MAIL_USERS, tls=test_ca) as stack:
        yield stack


@pytest_asyncio.fixture
async def mail_world(synapse: Synapse, own_mail: MailStack) -> AsyncIterator[World]:
    directory = Path(tempfile.mkdtemp(prefix="w"))
    world = world_on(synapse, own_mail, directory)
    try:
        yield world
    finally:
        await world.close()
        shutil.rmtree(directory, ignore_errors=True)


def _control(world: World, *words: str) -> Callable[[SeenEvent], bool]:
    """A predicate for the bot's notices in the control room that contain ``words``."""
    assert world.config is not None
    bot = world.config.matrix.user_id
    return lambda e: (
        e.room_id == world.control_room and e.sender == bot and all(w in e.body for w in words)
    )


async def test_bot_survives_a_homeserver_outage(own_world: tuple[World, Path]) -> None:
    world, root = own_world
    await world.setup(delivery_extra=QUICK_NOTICE)
    app = await world.start_bot()
    port = urlparse(world.synapse.url).port
    assert port is not None

    await asyncio.to_thread(world.synapse.stop)
    # Mail arrives while Matrix is down: it is accepted and mailed on; the room must wait.
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "OUTAGE-1313")
    await world.mail["alice"].wait_for_mail(lambda m: "OUTAGE-1313" in m.text)

    def room_post_waiting() -> bool:
        rows = app.store.outbox.pending(Channel.MATRIX)
        return any(r.attempts > 0 for r in rows)

    await wait_until(room_post_waiting, 30, "a failed attempt to post into the room")
    assert world.app_task is not None and not world.app_task.done()

    world.synapse = await asyncio.to_thread(Synapse.start, root / "hs", port=port)
    event = await world.mx["carol"].wait_for_event(lambda e: "OUTAGE-1313" in e.body, timeout=60)
    assert event.decrypted
    # And the Matrix side works again the other way.
    await world.mx["alice"].send(world.incident_room, "BACK-1414")
    await world.mail["bob"].wait_for_mail(lambda m: "BACK-1414" in m.text, timeout=30)
    assert not world.app_task.done()
    assert app.store.outbox.counts().get("dead", 0) == 0
    # The admins hear of it, afterwards: the control room is on Matrix too.
    assert world.admin is not None
    notice = await world.admin.wait_for_event(
        _control(world, f"Matrix ({world.synapse.url}) was unreachable from "), timeout=30
    )
    assert " to " in notice.body and "waited in the outbox" in notice.body
    assert "Waiting now:" in notice.body


async def test_f6_an_smtp_outage_is_told_and_so_is_its_end(
    mail_world: World, own_mail: MailStack
) -> None:
    world = mail_world
    await world.setup(delivery_extra=QUICK_NOTICE)
    await world.start_bot()
    assert world.admin is not None
    await asyncio.to_thread(own_mail.stop_postfix)
    await world.mx["alice"].send(world.incident_room, "OUTAGE-SMTP-7202")
    where = f"SMTP (127.0.0.1:{own_mail.smtp_port})"
    down = await world.admin.wait_for_event(_control(world, where, "unreachable since"), 30)
    assert "list mail waits in the outbox" in down.body
    assert "1 by mail in the outbox" in down.body
    await asyncio.to_thread(own_mail.start_postfix)
    mail = await world.mail["bob"].wait_for_mail(lambda m: "OUTAGE-SMTP-7202" in m.text, 30)
    assert mail.decrypted
    back = await world.admin.wait_for_event(_control(world, where, "works again"), 30)
    assert "Waiting now:" in back.body
    assert sum("unreachable since" in n for n in await notices(world)) == 1


# How long a mail may take from the list mailbox to the room: a ceiling for a loaded machine,
# and far below the IDLE timeout of these tests (a mail the bot was not told of waits for it).
IN_THE_ROOM = 30
LONG_IDLE = 300.0


class Idles:
    """The bot's IMAP receiver, watched where it begins an IDLE (a seam of our own).

    ``before``, when set, runs once just before the next IDLE is sent: the bot has searched
    the mailbox and found nothing, and the server has not yet been asked to tell of news.
    """

    def __init__(self, receiver: ImapReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
        self.receiver = receiver
        self.imap: aioimaplib.IMAP4 | None = None  # the connection of the last IDLE begun
        self.before: Callable[[], Awaitable[None]] | None = None
        original = receiver._idle

        async def idle(imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
            self.imap = imap
            if self.before is not None:
                hook, self.before = self.before, None
                await hook()
            await original(imap, lost)

        monkeypatch.setattr(receiver, "_idle", idle)

    def idling(self) -> bool:
        """The server has acknowledged the IDLE of the current session."""
        return self.imap is not None and self.imap.has_pending_idle()

    async def outage(self, stack: MailStack) -> None:
        """Dovecot dies (its sessions with it) and starts again on the same mailboxes."""
        connected = self.receiver.connected
        await asyncio.to_thread(stack.stop_dovecot)
        await wait_until(lambda: not connected.is_set(), 30, "the bot noticing the outage")
        self.imap = None  # the lost session's IDLE is over
        await asyncio.to_thread(stack.start_dovecot)


async def _in_the_room(
    world: World, stack: MailStack, idles: Idles, text: str, msgid: str
) -> SeenEvent:
    """The relayed mail as Carol sees it, within ``IN_THE_ROOM``; if not, where it was."""
    try:
        return await world.mx["carol"].wait_for_event(lambda e: text in e.body, IN_THE_ROOM)
    except TimeoutError as exc:
        assert world.app is not None
        store = world.app.store
        item = store.inbox.item(Channel.EMAIL, msgid)
        taken = "not taken" if item is None else store.inbox.state(item.id)
        raise AssertionError(
            f"{exc}\nPostfix to Dovecot: {stack.handovers(world.list_address)}; "
            f"the bot idling: {idles.idling()}; in its inbox: {taken}; "
            f"its outbox: {store.outbox.counts()}\n{stack.dovecot_log()}"
        ) from None


async def _long_idle_bot(world: World) -> App:
    """The world's bot, with an IDLE that lasts ``LONG_IDLE`` (the world's is 30 s)."""
    await world.setup(delivery_extra=QUICK_NOTICE)
    assert world.config is not None
    imap = dataclasses.replace(world.config.imap, idle_timeout=LONG_IDLE)
    world.config = dataclasses.replace(world.config, imap=imap)
    return await world.start_bot()


async def test_f6_an_imap_outage_is_told_and_so_is_its_end(
    mail_world: World, own_mail: MailStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = mail_world
    app = await _long_idle_bot(world)
    idles = Idles(app.email.receiver, monkeypatch)
    assert world.admin is not None
    await asyncio.to_thread(own_mail.stop_dovecot)
    where = f"IMAP (127.0.0.1:{own_mail.imap_port})"
    down = await world.admin.wait_for_event(_control(world, where, "unreachable since"), 30)
    assert "mail to the list waits on the mail server" in down.body
    # Mail sent meanwhile waits in Postfix's queue, and arrives after the outage.
    text = "OUTAGE-IMAP-7201"
    msgid = await world.mail["bob"].send(world.list_address, world.list_fpr, "s", text)
    await wait_until(
        lambda: "deferred" in own_mail.handovers(world.list_address),
        30,
        "Postfix deferring the mail while Dovecot is down",
    )
    await asyncio.to_thread(own_mail.start_dovecot)
    back = await world.admin.wait_for_event(_control(world, where, "works again"), 30)
    assert "Waiting now:" in back.body
    # The queue is flushed rather than left to Postfix's retry timer (1-2 s here), so the
    # wait below is the bot's: the mail may land before, during or after its catch-up.
    await asyncio.to_thread(own_mail.flush_queue)
    try:
        await wait_until(
            lambda: "sent" in own_mail.handovers(world.list_address),
            30,
            "Postfix handing the queued mail to Dovecot",
        )
    except TimeoutError as exc:  # deferred still, or bounced: the test stack's, not the bot's
        raise AssertionError(f"{exc}\n{own_mail.logs()}") from None
    event = await _in_the_room(world, own_mail, idles, text, msgid)
    assert event.decrypted
    assert sum("unreachable since" in n for n in await notices(world)) == 1


async def test_f6_mail_after_an_imap_outage_is_pushed_at_once(
    mail_world: World, own_mail: MailStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the bot is idling again after an outage, a new mail reaches the room at
    Dovecot's push, not at the end of the IDLE. Several outages: a missed push may be a race."""
    world = mail_world
    app = await _long_idle_bot(world)
    idles = Idles(app.email.receiver, monkeypatch)
    for n in range(3):
        await idles.outage(own_mail)
        await wait_until(idles.idling, 60, "the bot idling again after the outage")
        text = f"AFTER-OUTAGE-{n}-7203"
        # Dovecot is up: Postfix hands the mail over at once.
        msgid = await world.mail["bob"].send(world.list_address, world.list_fpr, "s", text)
        event = await _in_the_room(world, own_mail, idles, text, msgid)
        assert event.decrypted


async def test_f6_mail_landing_while_the_bot_reconnects_is_not_left_waiting(
    mail_world: World, own_mail: MailStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage, a mail lands after the bot's catch-up found the mailbox empty and
    before its IDLE began: the IDLE must be told of it at once."""
    world = mail_world
    app = await _long_idle_bot(world)
    idles = Idles(app.email.receiver, monkeypatch)
    sent: list[str] = []  # Message-IDs

    async def deliver() -> None:
        text = f"WHILE-RECONNECTING-{len(sent)}-7204"
        sent.append(await world.mail["bob"].send(world.list_address, world.list_fpr, "s", text))
        await wait_until(
            lambda: _arrived(own_mail, world.list_address, sent[-1]), 30, "mail in the mailbox"
        )

    for n in range(2):
        await idles.outage(own_mail)
        idles.before = deliver  # the mail lands after the catch-up, before the IDLE
        await wait_until(lambda n=n: len(sent) > n, 60, "the bot's catch-up after the outage")
        event = await _in_the_room(world, own_mail, idles, f"WHILE-RECONNECTING-{n}-7204", sent[n])
        assert event.decrypted
