"""Trust in members resting on their cross-signing identities, with Element-grade clients:
devices their identity signs are trusted silently, an identity reset blocks them until an
admin confirms, and members without cross-signing follow ``matrix.unsigned_devices``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from element_client import available
from test_element import ERIN, element, secir

from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import DEFAULT_PEOPLE, World, notices


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    if (why := available()) is not None:
        pytest.fail(f"the Element-grade client cannot run: {why}")


@pytest_asyncio.fixture
async def erin_world(world_unstarted: World) -> AsyncIterator[World]:
    await world_unstarted.setup(people=(*DEFAULT_PEOPLE, ERIN))
    await world_unstarted.start_bot()
    yield world_unstarted


async def test_a_new_device_signed_by_the_member_is_trusted_silently(erin_world: World) -> None:
    world = erin_world
    assert world.app is not None and world.admin is not None and world.config is not None
    store = world.app.store
    erin_id = world.matrix_ids["erin"]
    first = await element(world, "erin", "strict")
    # (A new session that did not verify itself interactively cannot send in strict mode.)
    second = await element(world, "erin", "legacy", bootstrap=False)
    # Element in its legacy mode lets a session its owner did not verify send.
    unsigned = await element(world, "erin", "legacy", bootstrap=False)
    try:
        await first.call("cross_sign", device_id=second.device_id)
        await wait_until(
            lambda: (
                (rec := store.devices.get(erin_id, second.device_id)) and rec.how == "cross-signing"
            ),
            20,
            "the bot seeing the new device signed by its owner",
        )
        await second.call("send", room_id=world.incident_room, body="SIGNED-DEVICE-1")
        await world.mail["bob"].wait_for_mail(lambda m: "SIGNED-DEVICE-1" in m.text)
        # A session the member did not verify is refused, with the reason.
        event_id = await unsigned.call("send", room_id=world.incident_room, body="UNSIGNED-1")
        notice = await world.admin.wait_for_event(
            lambda e: e.room_id == world.control_room and event_id in e.body,
            what="the unverified session refused",
        )
        assert "not verified" in notice.body
        # The reason, in the room, reaches the member's verified sessions (the unverified
        # one gets no keys from the bot).
        answer = await first.wait_for(
            lambda e: "Not mirrored" in e.body and "not verified" in e.body,
            what="the reason, in the room",
        )
        assert answer.kind == "message"
    finally:
        for op in (first, second, unsigned):
            await op.stop()
    # No notice per device: the member's identity vouches for them.
    assert not [n for n in await notices(world) if second.device_id in n]
    assert store.devices.identity(erin_id) is not None
    assert not [e for e in world.mail["bob"].seen if "UNSIGNED-1" in e.text]


async def test_an_identity_reset_blocks_until_an_admin_confirms(erin_world: World) -> None:
    world = erin_world
    assert world.app is not None and world.admin is not None and world.config is not None
    erin_id = world.matrix_ids["erin"]
    erin = await element(world, "erin", "strict")
    try:
        await erin.call("send", room_id=world.incident_room, body="BEFORE-RESET")
        await world.mail["bob"].wait_for_mail(lambda m: "BEFORE-RESET" in m.text)
        pinned = world.app.store.devices.identity(erin_id)
        assert pinned is not None and pinned.state == "pinned"

        reset = await erin.call("bootstrap", reset=True)
        notice = await world.admin.wait_for_event(
            lambda e: (
                e.room_id == world.control_room and "identity" in e.body and erin_id in e.body
            ),
            what="the identity change reported to the admins",
        )
        assert f"secir-bot trust {erin_id}" in notice.body
        assert reset["master"] in notice.body and pinned.master_key in notice.body
        direct = await erin.wait_for(
            lambda e: e.room_id != world.incident_room and "Your Matrix identity" in e.body,
            what="the direct message to the member",
        )
        assert direct.kind == "message"

        refused = await erin.call("send", room_id=world.incident_room, body="AFTER-RESET")
        await world.admin.wait_for_event(
            lambda e: e.room_id == world.control_room and refused in e.body,
            what="a post refused while the identity waits",
        )
        code, out, err = await secir("trust", erin_id, "-c", "config.toml", cwd=world.directory)
        assert code == 0, err
        assert reset["master"] in out
        await erin.call("send", room_id=world.incident_room, body="AFTER-CONFIRM")
        await world.mail["bob"].wait_for_mail(lambda m: "AFTER-CONFIRM" in m.text)
        await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "TO-ERIN-AGAIN")
        back = await erin.wait_for(lambda e: "TO-ERIN-AGAIN" in e.body, what="the bot's post")
        assert back.kind == "message", back
    finally:
        await erin.stop()
    assert not [m for m in world.mail["bob"].seen if "AFTER-RESET" in m.text]
    log = world.app.store.devices.trust_log(erin_id)
    assert [w for _, _, _, w, _ in log if w.startswith("identity")] == [
        "identity pinned",
        "identity changed",
        "identity pinned",
    ]


async def test_members_without_cross_signing_can_be_refused(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup(matrix_extra='unsigned_devices = "refuse"')
    await world.start_bot()
    assert world.app is not None and world.config is not None
    event_id = await world.mx["alice"].send(world.incident_room, "NO-XSIGN-1 from nio")
    # (The admin's own nio device is refused too, so the control room is read in the store.)
    store = world.app.store
    await wait_until(
        lambda: (i := store.inbox.item("matrix", event_id)) and i.state != "parked" and i,
        20,
        "the post of a member without cross-signing decided",
    )
    await wait_until(
        lambda: store.inbox.item("matrix", event_id).state == "rejected",  # type: ignore[union-attr]
        20,
        "the post refused",
    )
    assert "cross-signing" in (store.inbox.item("matrix", event_id).reason or "")  # type: ignore[union-attr]
    # Nor does the bot give such devices its keys.
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "NOT-FOR-NIO")
    bot = world.config.matrix.user_id
    await wait_until(
        lambda: [e for e in world.mx["carol"].undecryptable if e.sender == bot],
        20,
        "the bot's post reaching carol, undecryptable",
    )
    assert not [e for e in world.mx["carol"].events if "NOT-FOR-NIO" in e.body]
