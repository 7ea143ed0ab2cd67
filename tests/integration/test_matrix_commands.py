"""The Matrix front end of the commands, against Synapse with the admins' and members' own
nio devices: answers in the thread of the command, the audit entry, and refusals that
change nothing (a non-admin, an untrusted device, an unknown command, bad arguments)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from room_commands import answer_to, command

from secir_bot.model import Channel
from secir_bot.sandbox.operators import MatrixOperator, wait_until
from secir_bot.sandbox.world import World


def audit_actions(world: World) -> list[str]:
    assert world.app is not None
    return [e.action for e in world.app.store.audit.entries()]


async def test_admin_commands_answered_in_the_control_room(world: World) -> None:
    assert world.admin is not None and world.app is not None
    admin, room = world.admin, world.control_room
    helped = await command(world, admin, room, "!help")
    assert "!revoke" in helped.body and "!members" in helped.body
    members = await command(world, admin, room, "!members")
    for key in ("alice", "bob", "carol"):
        assert world.address(key) in members.body
    status = await command(world, admin, room, "!status")
    assert "outbox:" in status.body and "Matrix: up" in status.body
    unknown = await command(world, admin, room, "!nosuch thing")
    assert "there is no command !nosuch" in unknown.body
    bad = await command(world, admin, room, "!revoke")
    assert "usage: !revoke" in bad.body and "<who> is missing" in bad.body
    wrong = await command(world, admin, room, "!member not-an-address")
    assert "usage: !member" in wrong.body
    listkey = await command(world, admin, room, "!listkey")
    assert world.list_fpr in listkey.body.replace(" ", "")
    # Listings and refusals change nothing: no audit entry.
    assert audit_actions(world) == []
    # Chat that is not a command gets no answer and is not relayed anywhere.
    await admin.send(room, "CMD-CHAT just talking among admins")
    await command(world, admin, room, "!pending")
    assert not [
        e for e in admin.events if e.room_id == world.incident_room and "CMD-CHAT" in e.body
    ]


async def test_member_commands_in_the_incident_room_are_never_relayed(world: World) -> None:
    assert world.admin is not None and world.app is not None
    alice, room = world.mx["alice"], world.incident_room
    helped = await command(world, alice, room, "!help")
    assert "!leave" in helped.body and "!revoke" not in helped.body
    refused = await command(world, alice, room, "!members")
    assert "not available in the incident room" in refused.body
    # A post after the commands arrives by mail; the commands never did.
    await alice.send(room, "CMD-POST after the commands")
    bob = world.mail["bob"]
    await bob.wait_for_mail(lambda m: "CMD-POST" in m.text, what="the post")
    assert not [m for m in bob.seen if "!help" in m.text or "!members" in m.text]


async def test_non_admin_in_the_control_room_is_refused(world: World) -> None:
    assert world.admin is not None and world.app is not None
    carol = world.mx["carol"]
    await world.admin.client.room_invite(world.control_room, carol.user_id)
    await carol.wait_joined(world.control_room, [carol.user_id])
    await world.admin.wait_joined(world.control_room, [carol.user_id])
    event_id = await carol.send(world.control_room, f"!revoke {world.address('alice')} take over")
    # The answer goes to the room's audience (the admins); carol's own client cannot read it.
    answer = await answer_to(world, world.admin, world.control_room, event_id)
    assert "for the list's admins only" in answer.body
    assert world.app.store.members.by_email(world.address("alice")).active  # type: ignore[union-attr]
    assert audit_actions(world) == []


def _http(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.load(resp)
        return answer


async def second_device(world: World) -> MatrixOperator:
    """The admin's account logged in again: a new device with its own store."""
    assert world.admin is not None
    localpart = world.admin.user_id[1:].split(":")[0]
    login = await asyncio.to_thread(
        _http,
        f"{world.synapse.url}/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": world.admin.user_id},
            "password": f"pw-{localpart}",
        },
    )
    op = MatrixOperator(
        world.synapse.url,
        login["user_id"],
        login["device_id"],
        login["access_token"],
        Path(world.directory) / "clients" / f"admin-{login['device_id']}",
    )
    await op.start()
    world.mx["admin-2"] = op  # stopped with the world
    return op


async def test_untrusted_device_is_refused_and_block_is_audited(world: World) -> None:
    assert world.admin is not None and world.app is not None and world.config is not None
    admin, room = world.admin, world.control_room
    other = await second_device(world)
    device = str(other.client.device_id)
    await other.know_devices_of(world.config.matrix.user_id)
    # The bot meets the new device (trusted on first use, the list's default) ...
    await wait_until(
        lambda: any(d.device_id == device for d in world.app.store.devices.listing(admin.user_id)),  # type: ignore[union-attr]
        20,
        "the bot to see the second device",
    )
    listed = await command(world, admin, room, f"!devices {admin.user_id}")
    assert device in listed.body
    # ... and an admin blocks it: audited, and its commands are refused from then on.
    blocked = await command(world, admin, room, f"!block {admin.user_id} {device}")
    assert f"device {device} of {admin.user_id} is blocked" in blocked.body
    entry = world.app.store.audit.entries()[-1]
    assert (entry.action, entry.actor) == ("device.block", admin.user_id)
    assert entry.evidence_map["ref"]  # the command's event id
    event_id = await other.send(room, "!members")
    answer = await answer_to(world, admin, room, event_id)
    assert "device the bot trusts" in answer.body and world.address("bob") not in answer.body
    assert audit_actions(world) == ["device.block"]
    # Trusted again (the TrustDevice effect has the bot look at it afresh): it may command,
    # and reads the answer, which is encrypted to the admins' trusted devices only.
    trusted = await command(world, admin, room, f"!trust {admin.user_id} {device}")
    assert f"device {device} of {admin.user_id} is trusted" in trusted.body
    pending = await command(world, other, room, "!pending")
    assert "no open cases" in pending.body
    audit = await command(world, admin, room, "!audit 5")
    assert "device.block" in audit.body and "device.trust" in audit.body
    assert audit_actions(world) == ["device.block", "device.trust"]


async def test_f9_command_read_again_after_a_crash_is_not_run_twice(world: World) -> None:
    """The bot stopped after a command's change committed but before the command was marked
    answered: read again, it is answered "carried out already" and changes nothing more."""
    assert world.admin is not None and world.app is not None
    admin, room, alice = world.admin, world.control_room, world.mx["alice"]
    device = str(alice.client.device_id)
    line = f"!block {alice.user_id} {device}"
    event_id = await admin.send(room, line)
    first = await answer_to(world, admin, room, event_id)
    assert "is blocked" in first.body
    store = world.app.store
    with store.transaction() as tx:  # as if the decision had not been recorded
        tx.execute("UPDATE inbox SET state = 'new' WHERE source_id = ?", [event_id])
    world.app.inbox[Channel.MATRIX].wake()
    await wait_until(
        lambda: any(
            "carried out already (device.block" in e.body
            for e in admin.events
            if e.room_id == room
            and (e.content.get("m.relates_to") or {}).get("event_id") == event_id
        ),
        20,
        "the second answer",
    )
    assert audit_actions(world) == ["device.block"]


async def test_member_leaves_with_a_room_command(world: World) -> None:
    """``!leave`` in the incident room: Carol (the only contact of .jp) is off the list at
    once, removed from the room, the list is told, and the admins are warned."""
    assert world.admin is not None and world.app is not None and world.config is not None
    carol, alice = world.mx["carol"], world.mx["alice"]
    event_id = await carol.send(world.incident_room, "!leave")
    # The answer is for the room's audience, which Carol has just left: the others read it.
    left = await answer_to(world, alice, world.incident_room, event_id)
    assert "You have left SECIR" in left.body
    await alice.wait_for_event(
        lambda e: (
            e.sender == world.config.matrix.user_id  # type: ignore[union-attr]
            and "member left: Carol Tanaka (.jp)" in e.body
        ),
        what="the announcement",
    )
    warned = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "left the list" in e.body,
        what="the admins told",
    )
    assert "WARNING: .jp has no contact left" in warned.body
    await wait_until(
        lambda: not world.app.store.effects.pending(),  # type: ignore[union-attr]
        20,
        "the removal done",
    )
    assert await world.app.matrix.actions.membership(world.incident_room, carol.user_id) == "leave"
    member = world.app.store.members.by_matrix_id(carol.user_id)
    assert member is not None and member.status == "left"
    assert audit_actions(world) == ["member.leave"]
