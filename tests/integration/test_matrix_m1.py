"""M1: a re-keyed Matrix device, an event whose claimed device does not own its sender
key, and a device the bot has not fetched yet, against a real Synapse.

The forgeries use what an attacker holding a member's access token (or the homeserver)
can do: upload other device keys under a known device id, and post events whose
encrypted envelope names a device of their choice.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig

from secir_bot.sandbox.operators import MatrixOperator, wait_until
from secir_bot.sandbox.world import World, notices


def _http(url: str, token: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.load(resp)
        return answer


async def _forger(world: World, victim: MatrixOperator, name: str) -> AsyncClient:
    """A client with a fresh Olm account that speaks as ``victim``'s device (same device
    id, same access token) and has uploaded its own keys for that device."""
    store = Path(world.directory) / "clients" / name
    store.mkdir(parents=True)
    forger = AsyncClient(
        world.synapse.url,
        victim.user_id,
        device_id=str(victim.client.device_id),
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
    )
    forger.restore_login(victim.user_id, str(victim.client.device_id), victim.client.access_token)
    olm = forger.olm
    assert olm is not None
    device_id = str(victim.client.device_id)
    keys = {
        "user_id": victim.user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device_id}": olm.account.identity_keys["curve25519"],
            f"ed25519:{device_id}": olm.account.identity_keys["ed25519"],
        },
    }
    keys["signatures"] = {victim.user_id: {f"ed25519:{device_id}": olm.sign_json(keys)}}
    url = f"{world.synapse.url}/_matrix/client/v3/keys/upload"
    await asyncio.to_thread(_http, url, victim.client.access_token, "POST", {"device_keys": keys})
    # Only the device keys: nio must not try to upload (clashing) one-time keys.
    olm.account.shared = True
    olm.uploaded_key_count = 50
    # A filter of its own: Synapse would answer a first sync of this device from its cache.
    await forger.sync(timeout=0, full_state=True, sync_filter={"account_data": {"types": [name]}})
    return forger


async def test_m1_rekeyed_device_is_blocked_and_its_messages_refused(world: World) -> None:
    assert world.admin is not None and world.config is not None
    alice = world.mx["alice"]
    await alice.send(world.incident_room, "M1-BEFORE from the genuine device")
    await world.mail["bob"].wait_for_mail(lambda m: "M1-BEFORE" in m.text)

    forger = await _forger(world, alice, "alice-forged")
    try:
        device = str(alice.client.device_id)
        await world.admin.wait_for_event(
            lambda e: (
                e.room_id == world.control_room
                and device in e.body
                and "changed" in e.body
                and "blocked" in e.body
            ),
            what="the key change reported",
        )
        # As nio sends it: the envelope names the re-keyed device.
        sent_a = await forger.room_send(
            world.incident_room,
            "m.room.message",
            {"msgtype": "m.text", "body": "M1-FORGED-A sent with the new keys"},
            ignore_unverified_devices=True,
        )
        # The envelope names a device that does not exist.
        olm = forger.olm
        assert olm is not None
        content = olm.group_encrypt(
            world.incident_room,
            {
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": "M1-FORGED-B names no device"},
                "room_id": world.incident_room,
            },
        )
        content["device_id"] = "NOSUCHDEVICE"
        url = (
            f"{world.synapse.url}/_matrix/client/v3/rooms/{world.incident_room}"
            f"/send/m.room.encrypted/m1-forged-{world.tag}"
        )
        sent_b = await asyncio.to_thread(_http, url, alice.client.access_token, "PUT", content)
        for event_id in (getattr(sent_a, "event_id", "?"), sent_b["event_id"]):
            notice = await world.admin.wait_for_event(
                lambda e, event_id=event_id: e.room_id == world.control_room and event_id in e.body,
                what=f"the forged message {event_id} refused",
            )
            assert "not relayed" in notice.body
    finally:
        await forger.close()
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "M1-CONTROL")
    await world.mail["bob"].wait_for_mail(lambda m: "M1-CONTROL" in m.text)
    assert not [m for m in world.mail["bob"].seen if "M1-FORGED" in m.text]
    assert not [n for n in await notices(world) if "never received its key" in n]


async def _second_device(world: World, key: str) -> MatrixOperator:
    """Log ``key``'s Matrix account in again: a new device with its own store."""
    first = world.mx[key]
    url = f"{world.synapse.url}/_matrix/client/v3/login"
    login = await asyncio.to_thread(
        _http,
        url,
        "",
        "POST",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": first.user_id},
            "password": f"pw-{first.user_id[1:].split(':')[0]}",
        },
    )
    op = MatrixOperator(
        world.synapse.url,
        login["user_id"],
        login["device_id"],
        login["access_token"],
        Path(world.directory) / "clients" / f"{key}-{login['device_id']}",
    )
    await op.start()
    return op


async def test_m1_event_claiming_another_device_is_refused(world: World) -> None:
    assert world.admin is not None and world.config is not None and world.app is not None
    alice = world.mx["alice"]
    phone = await _second_device(world, "alice")
    try:
        await phone.know_devices_of(world.config.matrix.user_id)
        await phone.send(world.incident_room, "M1-PHONE genuine, from the phone")
        await world.mail["bob"].wait_for_mail(lambda m: "M1-PHONE" in m.text)
        # Encrypted by the phone, but the envelope names Alice's first device.
        olm = phone.client.olm
        assert olm is not None
        content = olm.group_encrypt(
            world.incident_room,
            {
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": "M1-CLAIMED names another device"},
                "room_id": world.incident_room,
            },
        )
        content["device_id"] = str(alice.client.device_id)
        url = (
            f"{world.synapse.url}/_matrix/client/v3/rooms/{world.incident_room}"
            f"/send/m.room.encrypted/m1-claimed-{world.tag}"
        )
        sent = await asyncio.to_thread(_http, url, phone.client.access_token, "PUT", content)
        notice = await world.admin.wait_for_event(
            lambda e: e.room_id == world.control_room and sent["event_id"] in e.body,
            what="the mismatched event refused",
        )
        assert "not relayed" in notice.body
    finally:
        await phone.stop()
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "M1-CONTROL-2")
    await world.mail["bob"].wait_for_mail(lambda m: "M1-CONTROL-2" in m.text)
    assert not [m for m in world.mail["bob"].seen if "M1-CLAIMED" in m.text]


async def test_m1_device_not_fetched_yet_is_judged_before_relaying(world: World) -> None:
    """A new device's message can arrive in the same sync as the news of the device: it
    waits for the bot to fetch the device's keys and judge it, and is not let through as
    "unknown"."""
    assert world.admin is not None and world.config is not None and world.app is not None
    await world.stop_bot()
    phone = await _second_device(world, "alice")
    try:
        await phone.know_devices_of(world.config.matrix.user_id)
        await phone.send(world.incident_room, "M1-NEWDEVICE sent while the bot was away")
        await world.start_bot()
        await world.mail["bob"].wait_for_mail(lambda m: "M1-NEWDEVICE" in m.text)
        await wait_until(
            lambda: [
                n
                for n in world.admin.events
                if n.room_id == world.control_room
                and "trusted on first use" in n.body
                and str(phone.client.device_id) in n.body
            ],
            10,
            "the new device announced to the admins",
        )
    finally:
        await phone.stop()
    assert not [n for n in await notices(world) if "not relayed" in n]
