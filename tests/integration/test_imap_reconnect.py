"""The IMAP side survives a dropped connection: the bot reconnects and nothing is lost."""

from __future__ import annotations

import asyncio
import subprocess

from servers import MailStack

from secir_bot.app import App
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World


async def test_bot_reconnects_after_the_server_drops_it(
    world: World, mail_stack: MailStack
) -> None:
    assert world.app is not None
    email = world.app.email
    # The server throws the bot's IMAP session out (as on a restart or an idle timeout).
    kicked = await asyncio.to_thread(
        subprocess.run,
        ["doveadm", "-c", str(mail_stack.dovecot_dir / "dovecot.conf"), "kick", world.list_address],
        capture_output=True,
        text=True,
        check=False,
    )
    assert kicked.returncode == 0, kicked.stderr
    await wait_until(lambda: not email.connected.is_set(), 10, "the bot noticing the kick")
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
