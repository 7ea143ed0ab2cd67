"""A server goes away and comes back: the bot keeps running, catches up, and tells the admins.

Each test has a server of its own to stop (the session's are shared): a Synapse restarted on
the same directory and port, so users, rooms and devices survive the outage; or a Dovecot or
Postfix restarted on the same ports, mailboxes and queue. The outage notice threshold is one
second here (five minutes by default).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from servers import MAIL_USERS, MailStack, TestCA
from worlds import world_on

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


async def test_f6_an_imap_outage_is_told_and_so_is_its_end(
    mail_world: World, own_mail: MailStack
) -> None:
    world = mail_world
    await world.setup(delivery_extra=QUICK_NOTICE)
    await world.start_bot()
    assert world.admin is not None
    await asyncio.to_thread(own_mail.stop_dovecot)
    where = f"IMAP (127.0.0.1:{own_mail.imap_port})"
    down = await world.admin.wait_for_event(_control(world, where, "unreachable since"), 30)
    assert "mail to the list waits on the mail server" in down.body
    # Mail sent meanwhile waits in Postfix's queue, and arrives after the outage.
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "OUTAGE-IMAP-7201")
    await asyncio.to_thread(own_mail.start_dovecot)
    back = await world.admin.wait_for_event(_control(world, where, "works again"), 30)
    assert "Waiting now:" in back.body
    # Postfix retries the mail it could not hand to Dovecot within 1-2 s (tests/servers.py);
    # the bot takes it at Dovecot's IDLE push, at the latest at the world's idle_timeout
    # (30 s). Once in a full run it was not there 30 s after the "works again" notice.
    event = await world.mx["carol"].wait_for_event(lambda e: "OUTAGE-IMAP-7201" in e.body, 75)
    assert event.decrypted
    assert sum("unreachable since" in n for n in await notices(world)) == 1


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
