"""The Matrix sync position is on the disk before the homeserver is told it.

The bot commits with deferred syncs (``Store.defer_syncs``): a commit survives a crash of the
process at once, but only a synced one survives a crash of the machine. Each sync's events
are committed to the inbox with the sync's position (``accept_sync``); the next sync sends
that position as ``since``, which tells the homeserver those events arrived, so it never
sends them again. The position's commit must therefore be synced before that request, or a
machine crash right after it would lose the events for good. Here the real bot syncs with
the real Synapse while members post, and every sync request is checked against the commit
of the position it sends.
"""

from __future__ import annotations

from typing import Any

from secir_bot.model import Channel
from secir_bot.sandbox.operators.base import wait_until
from secir_bot.sandbox.world import World

POSTS = 4


async def test_each_sync_position_is_on_disk_before_the_next_sync_sends_it(world: World) -> None:
    app = world.app
    assert app is not None and world.config is not None
    store = app.store
    receiver = app.matrix.receiver
    client = receiver.client
    # The store's count of changes once a sync's position was committed, by position.
    committed: dict[str, int] = {}
    # Per later sync request that sends a recorded position: whether its commit was synced.
    synced_at_request: list[bool] = []

    accept_sync = store.inbox.accept_sync

    def accepted(items: Any, token: str) -> Any:
        result = accept_sync(items, token)
        committed[token] = store.db.conn.total_changes
        return result

    sync = client.sync

    async def syncing(*args: Any, since: str | None = None, **kwargs: Any) -> Any:
        if since in committed:
            synced_at_request.append(store._synced >= committed[since])
        return await sync(*args, since=since, **kwargs)

    store.inbox.accept_sync = accepted  # type: ignore[method-assign]
    client.sync = syncing  # type: ignore[method-assign]
    carol = world.mx["carol"]
    room = world.incident_room
    for n in range(POSTS):
        asked = len(synced_at_request)
        event_id = await carol.send(room, f"durable position {n}")
        # The post is in the bot's inbox (its sync came back), and a sync came after it.
        await wait_until(
            lambda e=event_id: store.inbox.item(Channel.MATRIX, e) is not None, 30, "the post"
        )
        await wait_until(lambda a=asked: len(synced_at_request) > a, 30, "the next sync")
    assert len(synced_at_request) >= POSTS
    assert all(synced_at_request), synced_at_request
