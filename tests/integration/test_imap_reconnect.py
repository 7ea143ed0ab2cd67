"""The IMAP side survives a dropped connection: the bot reconnects and nothing is lost."""

from __future__ import annotations

import asyncio
import subprocess

from servers import MailStack

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
