"""The homeserver goes away and comes back: the bot keeps running and catches up.

A Synapse of its own for this test (the session's is shared), restarted on the same
directory and port, so users, rooms and devices survive the outage.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import pytest_asyncio
from servers import MailStack
from worlds import world_on

from secir_bot.model import Channel
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import World


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


async def test_bot_survives_a_homeserver_outage(own_world: tuple[World, Path]) -> None:
    world, root = own_world
    await world.setup()
    app = await world.start_bot()
    port = urlparse(world.synapse.url).port
    assert port is not None

    await asyncio.to_thread(world.synapse.stop)
    # Mail arrives while Matrix is down: it is accepted and mailed on; the room must wait.
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "OUTAGE-1313")
    await world.mail["alice"].wait_for_mail(lambda m: "OUTAGE-1313" in m.text)

    def room_post_waiting() -> bool:
        rows = app.store.outbox_pending(Channel.MATRIX)
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
    assert app.store.outbox_counts().get("dead", 0) == 0
