"""The bot's own events, coming back in its sync, are skipped quietly."""

from __future__ import annotations

import logging

import pytest

from secir_bot.model import Channel
from secir_bot.sandbox.world import World


async def test_the_bots_own_post_is_neither_stored_nor_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert world.app is not None
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "OWN-ECHO-4410")
    relayed = await world.mx["carol"].wait_for_event(lambda e: "OWN-ECHO-4410" in e.body)
    # Alice's post comes after the bot's in the room: once it is relayed, the bot's sync
    # has carried the bot's own post too.
    await world.mx["alice"].send(world.incident_room, "AFTER-ECHO-4411")
    await world.mail["bob"].wait_for_mail(lambda m: "AFTER-ECHO-4411" in m.text)

    assert world.app.store.inbox.item(Channel.MATRIX, relayed.event_id) is None
    # Its delivery is logged; its coming back is not ("decrypted; sending device refused").
    said = [r.getMessage() for r in caplog.records if relayed.event_id in r.getMessage()]
    assert [line for line in said if "delivered" not in line] == []
