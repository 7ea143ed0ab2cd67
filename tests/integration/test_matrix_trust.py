"""Matrix device trust and undecryptable events, against a real Synapse."""

from __future__ import annotations

import asyncio
from pathlib import Path

from secir_bot.sandbox.operators import MatrixOperator, wait_until
from secir_bot.sandbox.world import World


async def _second_device(world: World, key: str) -> MatrixOperator:
    """Log ``key``'s Matrix account in again: a new device with its own store."""
    first = world.mx[key]
    from nio import AsyncClient, LoginResponse

    probe = AsyncClient(world.synapse.url, first.user_id)
    login = await probe.login(f"pw-{first.user_id[1:].split(':')[0]}", device_name="phone")
    await probe.close()
    assert isinstance(login, LoginResponse), login
    op = MatrixOperator(
        world.synapse.url,
        login.user_id,
        login.device_id,
        login.access_token,
        Path(world.directory) / "clients" / f"{key}-2",
    )
    await op.start()
    return op


async def test_new_device_of_a_member_is_trusted_on_first_use_and_announced(world: World) -> None:
    assert world.config is not None and world.admin is not None
    phone = await _second_device(world, "carol")
    try:
        await world.mail["bob"].send(
            world.list_address, world.list_fpr, "subject", "TOFU-3391 after the new device"
        )
        event = await phone.wait_for_event(lambda e: "TOFU-3391" in e.body)
        assert event.decrypted
        notice = await world.admin.wait_for_event(
            lambda e: (
                e.room_id == world.control_room
                and "trusted on first use" in e.body
                and phone.client.device_id in e.body
            )
        )
        assert world.mx["carol"].user_id in notice.body
    finally:
        await phone.stop()


async def test_non_member_in_the_room_gets_no_keys(world: World) -> None:
    assert world.config is not None and world.admin is not None
    reg = world.synapse.register(f"mallory-{world.tag}", "pw-mallory")
    mallory = MatrixOperator(
        world.synapse.url,
        reg["user_id"],
        reg["device_id"],
        reg["access_token"],
        Path(world.directory) / "clients" / "mallory",
    )
    await mallory.start()
    try:
        await world.admin.client.room_invite(world.incident_room, mallory.user_id)
        await world.admin.wait_joined(world.incident_room, [mallory.user_id])
        await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "SECRET-6612")
        await world.mx["carol"].wait_for_event(lambda e: "SECRET-6612" in e.body)
        bot = world.config.matrix.user_id
        await wait_until(
            lambda: [e for e in mallory.undecryptable if e.sender == bot],
            15,
            "the bot's event reaching mallory, undecryptable",
        )
        assert not [e for e in mallory.events if "SECRET-6612" in e.body]
    finally:
        await mallory.stop()


async def test_undecryptable_event_is_reported_to_the_admins(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup(undecryptable_after=0.5)
    await world.start_bot()
    assert world.config is not None and world.admin is not None
    alice = world.mx["alice"]
    # Alice's client refuses to share its room key with the bot's device.
    bot = world.config.matrix.user_id
    olm = alice.client.olm
    assert olm is not None
    for device in olm.device_store.active_user_devices(bot):
        alice.client.blacklist_device(device)
    event_id = await alice.send(world.incident_room, "NOKEY-1201 the bot cannot read this")
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "could not be decrypted" in e.body, timeout=30
    )
    assert event_id in notice.body
    assert "NOKEY-1201" not in notice.body
    assert not [m for m in world.mail["bob"].seen if "NOKEY-1201" in m.text]


async def test_unencrypted_incident_room_is_refused_both_ways(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup(encrypted_incident_room=False)
    await world.start_bot()
    assert world.admin is not None
    # Mail to the list is never posted into a room that is not encrypted.
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "CLEARROOM-3344")
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "failed for good" in e.body
    )
    assert "not encrypted" in notice.body
    assert not [e for e in world.mx["carol"].events if "CLEARROOM-3344" in e.body]
    # A message in that room is not mirrored to the list either.
    await world.mx["alice"].send(world.incident_room, "PLAIN-7788 typed in a clear room")
    await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "not end-to-end encrypted" in e.body
    )
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "CONTROL-1")
    await world.mail["bob"].wait_for_mail(lambda m: "CONTROL-1" in m.text)
    assert not [m for m in world.mail["bob"].seen if "PLAIN-7788" in m.text]


async def test_garbage_to_device_message_does_not_stop_the_bot(world: World) -> None:
    """Anyone on any homeserver can send the bot's device a broken Olm message."""
    import json
    import urllib.request

    assert world.admin is not None and world.config is not None and world.app is not None
    bot = world.config.matrix.user_id
    olm = world.admin.client.olm
    assert olm is not None
    (device,) = list(olm.device_store.active_user_devices(bot))
    content = {
        "algorithm": "m.olm.v1.curve25519-aes-sha2",
        "sender_key": device.curve25519,
        "ciphertext": {device.curve25519: {"type": 0, "body": "AAAA"}},
    }
    body = json.dumps({"messages": {bot: {device.id: content}}}).encode()
    req = urllib.request.Request(
        f"{world.synapse.url}/_matrix/client/v3/sendToDevice/m.room.encrypted/garbage-{world.tag}",
        data=body,
        method="PUT",
        headers={
            "Authorization": f"Bearer {world.admin.client.access_token}",
            "Content-Type": "application/json",
        },
    )
    status = await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=5).status)
    assert status == 200
    # The bot digests it and goes on mirroring.
    await world.mx["alice"].send(world.incident_room, "STILL-ALIVE-4242")
    await world.mail["bob"].wait_for_mail(lambda m: "STILL-ALIVE-4242" in m.text)
    assert world.app_task is not None and not world.app_task.done()


async def test_messages_from_a_blocked_device_are_not_relayed(world: World) -> None:
    assert world.app is not None and world.admin is not None
    alice = world.mx["alice"]
    # The bot's record says this device's keys changed (a seam we own: our own store).
    own = alice.client.olm
    assert own is not None
    world.app.store.devices.record(
        alice.user_id, str(alice.client.device_id), own.account.identity_keys["ed25519"], "blocked"
    )
    await alice.send(world.incident_room, "BLOCKED-DEVICE-8118")
    notice = await world.admin.wait_for_event(
        lambda e: (
            e.room_id == world.control_room and "blocked" in e.body and "not relayed" in e.body
        )
    )
    assert alice.user_id in notice.body
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "CONTROL-8118")
    await world.mail["bob"].wait_for_mail(lambda m: "CONTROL-8118" in m.text)
    assert not [m for m in world.mail["bob"].seen if "BLOCKED-DEVICE-8118" in m.text]
