"""A room key replaced while the bot shares it (seen in a full run of the suite).

nio drops a room's outbound key when its sync sees a membership or device change; when
that lands while ``share_group_session`` is sending the key to the room's devices, nio
fails on the missing key with a ``KeyError``. Here the drop is made to land at exactly that
moment, as the sync would: after the key is made, before it is marked shared.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nio import ShareGroupSessionResponse

from secir_bot.sandbox.world import World


async def test_a_room_key_dropped_while_shared_is_shared_again_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.app is not None
    client = world.app.matrix.client
    olm = client.olm
    assert olm is not None
    original = client.receive_response
    raced: list[str] = []

    async def then_drop(response: Any) -> Any:
        result = await original(response)
        room_id = getattr(response, "room_id", None)
        if isinstance(response, ShareGroupSessionResponse) and room_id and not raced:
            raced.append(room_id)
            # nio has just marked the key shared; the sync loop drops it (a member event)
            # before share_group_session resumes.
            asyncio.get_running_loop().call_soon(client.invalidate_outbound_session, room_id)
        return result

    monkeypatch.setattr(client, "receive_response", then_drop)
    olm.outbound_group_sessions.pop(world.incident_room, None)  # the next post shares a key

    bob = world.mail["bob"]
    await bob.send(world.list_address, world.list_fpr, "Key race", "RACE-POST after the drop")
    event = await world.mx["carol"].wait_for_event(
        lambda e: "RACE-POST" in e.body, what="the post in the room"
    )
    assert event.decrypted
    assert raced == [world.incident_room]
    # Delivered in its first attempt: the Matrix sender shared a new key itself, nothing
    # failed, so nothing waited for the outbox's retry.
    rows = world.app.store.db.execute(
        "SELECT attempts, state FROM outbox WHERE channel = 'matrix' AND target = ?"
        " AND kind = 'post'",
        [world.incident_room],
    ).fetchall()
    assert rows == [(0, "sent")]
    assert world.app_task is not None and not world.app_task.done()
