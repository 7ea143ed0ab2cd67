"""The bot as an Element user meets it: matrix-js-sdk with its Rust crypto (the stack of
Element Web and, through matrix-rust-sdk, Element X), in both of Element's modes:
"strict" excludes devices not cross-signed by their owner, "legacy" shares with all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from element_client import ElementOperator, available

from secir_bot.sandbox.world import DEFAULT_PEOPLE, Person, World

ERIN = Person("erin", "Erin Okafor", ".ng", email=False, own_client=True)


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    if (why := available()) is not None:
        pytest.fail(f"the Element-grade client cannot run: {why}")


async def element(world: World, key: str, mode: str, *, bootstrap: bool = True) -> ElementOperator:
    """A new Element device of ``key``'s account, set up as a fresh Element login is."""
    user_id = world.matrix_ids[key]
    op = await ElementOperator.start(
        world.synapse.url,
        user_id,
        f"pw-{key}-{world.tag}",
        Path(world.directory) / "logs" / f"element-{key}.log",
    )
    try:
        if bootstrap:
            await op.call("bootstrap")
        await op.call("mode", mode=mode)
        await op.call("join", room_id=world.incident_room)
    except BaseException:
        await op.stop()
        raise
    return op


@pytest_asyncio.fixture
async def erin_world(world_unstarted: World) -> AsyncIterator[World]:
    await world_unstarted.setup(people=(*DEFAULT_PEOPLE, ERIN))
    await world_unstarted.start_bot()
    yield world_unstarted


async def test_element_client_member_post_reaches_email(erin_world: World) -> None:
    """The Element-grade client works against the suite's servers (legacy mode, where
    the member's client shares its keys with every device)."""
    world = erin_world
    assert world.admin is not None
    erin = await element(world, "erin", "legacy")
    try:
        await world.admin.wait_joined(world.incident_room, [erin.user_id])
        await erin.call("send", room_id=world.incident_room, body="FROM-ELEMENT-SMOKE")
        mail = await world.mail["bob"].wait_for_mail(lambda m: "FROM-ELEMENT-SMOKE" in m.text)
        assert mail.decrypted
    finally:
        await erin.stop()
