"""Helpers for the tests that drive commands from a Matrix client: send a line, get the
bot's answer in the thread of the command, checked for its form."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nio import MegolmEvent

from secir_bot.sandbox.operators import MatrixOperator, SeenEvent
from secir_bot.sandbox.world import World


def answer_to(world: World, op: MatrixOperator, room: str, event_id: str) -> Any:
    """The bot's notice that answers ``event_id`` (in its thread), as ``op`` sees it."""
    assert world.config is not None

    async def wait() -> SeenEvent:
        return await op.wait_for_event(
            lambda e: (
                e.room_id == room
                and e.sender == world.config.matrix.user_id  # type: ignore[union-attr]
                and ((e.content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get(
                    "event_id"
                )
                == event_id
            ),
            what=f"the answer to {event_id}",
        )

    return wait()


async def command(world: World, op: MatrixOperator, room: str, line: str) -> SeenEvent:
    """Send ``line`` from ``op`` in ``room``; the bot's answer, checked for its form."""
    event_id = await op.send(room, line)
    answer: SeenEvent = await answer_to(world, op, room, event_id)
    rel = answer.content["m.relates_to"]
    assert answer.msgtype == "m.notice" and answer.decrypted
    assert rel["rel_type"] == "m.thread" and rel["event_id"] == event_id
    assert answer.content["m.mentions"] == {}
    return answer


def _get(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.load(resp)
        return answer


async def encrypted_event(op: MatrixOperator, room: str, event_id: str) -> MegolmEvent:
    """The event as the homeserver keeps it, still encrypted (fetched raw: nio's own
    room_get_event would decrypt it)."""
    url = f"{op.client.homeserver}/_matrix/client/v3/rooms/{quote(room)}/event/{quote(event_id)}"
    raw = await asyncio.to_thread(_get, url, op.client.access_token)
    event = MegolmEvent.from_dict(raw)
    assert isinstance(event, MegolmEvent), raw
    return event


async def newcomer(world: World, key: str) -> MatrixOperator:
    reg = await asyncio.to_thread(world.synapse.register, f"{key}-{world.tag}", f"pw-{key}")
    op = MatrixOperator(
        world.synapse.url,
        reg["user_id"],
        reg["device_id"],
        reg["access_token"],
        Path(world.directory) / "clients" / key,
    )
    await op.start()
    world.mx[key] = op  # stopped with the world
    return op
