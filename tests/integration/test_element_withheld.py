"""Withheld room keys, both ways, and events that can never be decrypted.

A member's client that keeps its key from the bot gets told why in the room, in the thread
of the lost message; a device the bot keeps its key from gets an ``m.room_key.withheld``
with a code, so its client shows a reason instead of waiting for a key for ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from element_client import available
from test_element import ERIN, element

from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import DEFAULT_PEOPLE, Person, World, notices

NED = Person("ned", "Ned Outsider", ".de", email=False, member=False, own_client=True)


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    if (why := available()) is not None:
        pytest.fail(f"the Element-grade client cannot run: {why}")


@pytest_asyncio.fixture
async def element_world(world_unstarted: World) -> AsyncIterator[World]:
    await world_unstarted.setup(people=(*DEFAULT_PEOPLE, ERIN, NED))
    await world_unstarted.start_bot()
    yield world_unstarted


async def test_a_withheld_key_is_reported_to_the_member_in_the_thread(
    element_world: World,
) -> None:
    world = element_world
    assert world.admin is not None and world.config is not None
    erin = await element(world, "erin", "legacy")
    try:
        root = await erin.call("send", room_id=world.incident_room, body="W-ROOT incident")
        await world.mail["bob"].wait_for_mail(lambda m: "W-ROOT" in m.text)
        # Element's "Never send encrypted messages to unverified sessions".
        await erin.call("verified_only", on=True)
        lost = await erin.call(
            "send", room_id=world.incident_room, body="W-LOST-1 in the thread", thread_root=root
        )
        told = await erin.wait_for(
            lambda e: lost in e.body and e.kind == "message", what="the notice in the thread"
        )
        rel = told.content.get("m.relates_to") or {}
        assert rel.get("rel_type") == "m.thread" and rel.get("event_id") == root, rel
        assert "m.unverified" in told.body
        assert "Never send encrypted messages to unverified sessions" in told.body
        assert erin.user_id in told.body
        assert told.content.get("m.mentions") == {"user_ids": [erin.user_id]}
        second = await erin.call("send", room_id=world.incident_room, body="W-LOST-2")
        again = await erin.wait_for(
            lambda e: second in e.body and e.kind == "message", what="the second notice"
        )
        assert (again.content.get("m.relates_to") or {}).get("event_id") == second
    finally:
        await erin.stop()
    # The admins hear of it once per member, not once per message.
    withheld = [n for n in await notices(world) if "withheld" in n]
    assert len(withheld) == 1 and lost in withheld[0] and erin.user_id in withheld[0]
    assert not [m for m in world.mail["bob"].seen if "W-LOST" in m.text]


async def test_devices_left_without_the_key_are_told_why(element_world: World) -> None:
    world = element_world
    assert world.config is not None
    ned = await element(world, "ned", "legacy")  # in the room, but not a member
    unverified = await element(world, "erin", "legacy", bootstrap=False)
    first = await element(world, "erin", "strict")  # so that erin has an identity
    try:
        bot = world.config.matrix.user_id
        assert world.app is not None
        bot_olm = world.app.matrix.client.olm
        assert bot_olm is not None
        await wait_until(
            lambda: (
                {ned.device_id, unverified.device_id}
                <= {
                    d.id
                    for u in (ned.user_id, unverified.user_id)
                    for d in bot_olm.device_store.active_user_devices(u)
                }
            ),
            20,
            "the bot knowing the devices",
        )
        await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "W-SECRET-1")
        got = await first.wait_for(lambda e: "W-SECRET-1" in e.body, what="the member's copy")
        assert got.kind == "message"
        await ned.wait_for(
            lambda e: (
                e.sender == bot and e.event_id == got.event_id and e.code == "MEGOLM_KEY_WITHHELD"
            ),
            what="a withheld code for the non-member",
        )
        await unverified.wait_for(
            lambda e: (
                e.sender == bot
                and e.event_id == got.event_id
                and e.code == "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE"
            ),
            what="a withheld code for the unverified session",
        )
    finally:
        for op in (ned, unverified, first):
            await op.stop()
    assert not [e for e in ned.events if "W-SECRET-1" in e.body]


async def test_an_event_that_can_never_be_decrypted_is_closed_at_once(world: World) -> None:
    """Its room key reached the bot only from a later message on: no retry can help, so
    it is reported and closed without waiting for ``undecryptable_report_after``."""
    assert world.app is not None and world.config is not None and world.admin is not None
    alice = world.mx["alice"]
    olm = alice.client.olm
    assert olm is not None
    bot = world.config.matrix.user_id
    (bot_device,) = list(olm.device_store.active_user_devices(bot))
    alice.client.blacklist_device(bot_device)
    early = await alice.send(world.incident_room, "W-EARLY the bot never gets this key")
    # Alice's client now shares the same room key, from its current index, with the bot
    # (olm's own call: the client's would start a new room key).
    olm.verify_device(bot_device)
    session = olm.outbound_group_sessions[world.incident_room]
    session.users_ignored.discard((bot, bot_device.id))
    session.shared = False
    await alice.send(world.incident_room, "W-LATER the bot reads this one")
    await world.mail["bob"].wait_for_mail(lambda m: "W-LATER" in m.text)
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and early in e.body,
        what="the event reported as lost for good",
    )
    assert "can never be decrypted" in notice.body
    item = world.app.store.inbox.item("matrix", early)
    assert item is not None and item.state == "undecryptable"


async def test_parked_events_are_capped(world_unstarted: World) -> None:
    """Issue 6: undecryptable events cannot pile up without bound."""
    world = world_unstarted
    await world.setup(matrix_extra="max_parked = 2")
    await world.start_bot()
    assert world.app is not None and world.config is not None and world.admin is not None
    alice = world.mx["alice"]
    olm = alice.client.olm
    assert olm is not None
    for device in olm.device_store.active_user_devices(world.config.matrix.user_id):
        alice.client.blacklist_device(device)
    sent = [await alice.send(world.incident_room, f"W-FLOOD-{n}") for n in range(5)]
    store = world.app.store
    await wait_until(
        lambda: all(store.inbox.item("matrix", e) for e in sent), 20, "all five stored"
    )
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "max_parked" in e.body,
        what="the flood reported",
    )
    assert "closed" in notice.body
    assert store.inbox.count("matrix", "parked") <= 2
    assert [store.inbox.item("matrix", e).state for e in sent[:3]] == ["undecryptable"] * 3  # type: ignore[union-attr]
