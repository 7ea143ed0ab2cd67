"""The IMAP side survives a dropped connection: the bot reconnects and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time

import pytest
from servers import MailStack

from secir_bot.app import App
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World


async def _kick(mail_stack: MailStack, user: str) -> None:
    """The server throws ``user``'s IMAP sessions out (as on a restart or an idle timeout)."""
    kicked = await asyncio.to_thread(
        subprocess.run,
        ["doveadm", "-c", str(mail_stack.dovecot_dir / "dovecot.conf"), "kick", user],
        capture_output=True,
        text=True,
        check=False,
    )
    # 68 (EX_NOUSER): "no users kicked", nobody of that name is connected right now.
    assert kicked.returncode in (0, 68), kicked.stdout + kicked.stderr


async def _drop(mail_stack: MailStack, user: str, connected: asyncio.Event) -> None:
    """Kick ``user`` until the bot notices.

    Dovecot learns of a new session a moment after its login, so a kick right after the
    bot (re)connected can find nothing to kick yet; it is repeated until one lands.
    """
    deadline = time.monotonic() + 5
    while connected.is_set():
        assert time.monotonic() < deadline, "the bot did not notice a kick within 5 s"
        await _kick(mail_stack, user)
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: not connected.is_set(), 1, "the bot noticing the kick")


async def test_bot_reconnects_after_the_server_drops_it(
    world: World, mail_stack: MailStack
) -> None:
    assert world.app is not None
    email = world.app.email
    await _drop(mail_stack, world.list_address, email.connected)
    # Mail sent while the bot is away arrives once it is back.
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "AFTER-KICK-5150")
    await wait_until(lambda: email.connected.is_set(), 20, "the bot reconnecting")
    event = await world.mx["carol"].wait_for_event(lambda e: "AFTER-KICK-5150" in e.body)
    assert event.decrypted
    assert world.app_task is not None and not world.app_task.done()


async def test_missing_imap_folder_is_reported_and_the_bot_stays_up(
    world_unstarted: World,
) -> None:
    world = world_unstarted
    # Dovecot (maildir) refuses "/" in a name, as a server with a required "INBOX." prefix
    # refuses names without it.
    await world.setup(imap_extra='processed_folder = "bad/name"')
    assert world.config is not None and world.admin is not None
    app = App(world.config)
    world.app, world.app_task = app, asyncio.create_task(app.run())
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "IMAP folder" in e.body, timeout=30
    )
    assert "bad/name" in notice.body
    assert not world.app_task.done()
    # The Matrix side keeps working meanwhile.
    for op in world.mx.values():
        await op.know_devices_of(world.config.matrix.user_id)
    await world.mx["alice"].send(world.incident_room, "MATRIX-SIDE-UP")
    await world.admin.wait_for_event(lambda e: "MATRIX-SIDE-UP" in e.body)
    assert not world.app_task.done()


async def test_f6_the_reconnect_delay_starts_over_after_every_good_session(
    world: World, mail_stack: MailStack, caplog: pytest.LogCaptureFixture
) -> None:
    assert world.app is not None
    email = world.app.email
    for _ in range(3):
        await _drop(mail_stack, world.list_address, email.connected)
        await wait_until(email.connected.is_set, 20, "the bot reconnecting")
    waits = [
        r.getMessage().rsplit(" ", 1)[-1]
        for r in caplog.records
        if r.name == "secir_bot.bridges.email" and "reconnecting in" in r.getMessage()
    ]
    # Each drop followed a session that worked: each is a first failure, retried after 1 s
    # (not 1, 2, 4 s: the delay must not keep growing across good sessions).
    assert waits == ["1s", "1s", "1s"]


async def test_f6_a_bye_during_idle_is_noticed_at_once(world: World, mail_stack: MailStack) -> None:
    """Dovecot answers a kick with "* BYE" and then closes. When the BYE is read before the
    close, it ends the IDLE wait; the end of IDLE then never comes, and the bot used to wait
    30 s for it before reconnecting. Which one is read first varies, so this kicks often.
    """
    assert world.app is not None
    connected = world.app.email.connected
    for _ in range(8):
        await _drop(mail_stack, world.list_address, connected)
        await wait_until(connected.is_set, 5, "the bot reconnecting within 5 s")
