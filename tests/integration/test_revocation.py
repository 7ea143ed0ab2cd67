"""Revocation end to end (issue 9): ``!revoke`` and ``!confirm`` in the control room, and
then the revoked person, with their OWN clients, reads no later message on either channel
and cannot post any more. Against Synapse, Postfix/Dovecot and gpg."""

from __future__ import annotations

import re

import pytest
from nio import EncryptionError
from room_commands import command, encrypted_event

from secir_bot.sandbox.world import World, notices


async def test_f9_revoked_member_reads_nothing_later_and_cannot_post(world: World) -> None:
    assert world.admin is not None and world.app is not None and world.config is not None
    admin, alice, carol = world.admin, world.mx["alice"], world.mx["carol"]
    alice_mail, bob = world.mail["alice"], world.mail["bob"]
    room = world.incident_room
    bot = world.config.matrix.user_id

    # Before: Alice reads the room's posts (her device has the room key).
    await bob.send(world.list_address, world.list_fpr, "before", "REV-BEFORE from Bob")
    before = await alice.wait_for_event(
        lambda e: e.room_id == room and "REV-BEFORE" in e.body, what="the post before"
    )
    assert before.decrypted
    old_session = (await encrypted_event(admin, room, before.event_id)).session_id

    asked = await command(
        world, admin, world.control_room, f"!revoke {alice.user_id} lost her laptop"
    )
    code = re.search(r"!confirm (\S+)", asked.body)
    assert code is not None, asked.body
    assert world.app.store.members.by_matrix_id(alice.user_id).active  # type: ignore[union-attr]
    done = await command(world, admin, world.control_room, f"!confirm {code.group(1)}")
    assert "revoked: Alice Jansen (.nl)" in done.body

    # Kicked from the room, and the list is told on both channels.
    announced = await carol.wait_for_event(
        lambda e: e.room_id == room and e.sender == bot and "member removed: Alice" in e.body,
        what="the announcement in the room",
    )
    assert announced.msgtype == "m.notice"
    await bob.wait_for_mail(lambda m: "member removed: Alice" in m.text, what="the announcement")
    assert await world.app.matrix.actions.membership(room, alice.user_id) == "leave"

    # After: a new room key that Alice's device never got; her device cannot decrypt.
    await bob.send(world.list_address, world.list_fpr, "after", "REV-AFTER from Bob")
    after = await carol.wait_for_event(
        lambda e: e.room_id == room and "REV-AFTER" in e.body, what="the post after"
    )
    event = await encrypted_event(admin, room, after.event_id)
    assert event.session_id != old_session
    olm = alice.client.olm
    assert olm is not None
    assert olm.inbound_group_store.get(room, event.sender_key, event.session_id) is None
    with pytest.raises(EncryptionError):
        olm.decrypt_megolm_event(event)
    assert not [e for e in alice.events if "REV-AFTER" in e.body]

    # The next list mail is not encrypted to her key: her own gpg cannot open it.
    await carol.send(room, "REV-ROOM-AFTER from Carol")
    mailed = await bob.wait_for_mail(lambda m: "REV-ROOM-AFTER" in m.text, what="the list mail")
    opened = await alice_mail.keyring.decrypt(mailed.raw)
    assert not opened.ok

    # Her signed mail is refused; nobody gets it.
    await alice_mail.send(world.list_address, world.list_fpr, "still here", "REV-ALICE-MAIL")
    await admin.wait_for_event(
        lambda e: (
            e.room_id == world.control_room
            and "Mail rejected" in e.body
            and alice_mail.address in e.body
        ),
        what="Alice's mail refused",
    )
    await carol.send(room, "REV-LAST from Carol")
    await bob.wait_for_mail(lambda m: "REV-LAST" in m.text, what="the last post")
    assert not [m for m in bob.seen if "REV-ALICE-MAIL" in m.text]
    assert not [e for e in carol.events if "REV-ALICE-MAIL" in e.body]
    assert not [m for m in await alice_mail.fetch_all() if b"member removed" in m]

    entry = next(e for e in world.app.store.audit.entries() if e.action == "member.revoke")
    assert (entry.actor, entry.target, entry.reason) == (
        admin.user_id,
        alice.user_id,
        "lost her laptop",
    )
    assert entry.evidence_map["confirmed"] == "yes"
    assert world.app.store.audit.verify().ok
    assert not [n for n in await notices(world) if "keeps failing" in n]
