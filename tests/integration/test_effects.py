"""The effects executor against the real stack: each effect of a committed command is
carried out once, by the running bot, on Synapse, Postfix/Dovecot and gpg.

The effects are queued the way ``dispatch.commit`` queues them (``store.effects.record`` in
a transaction); the members read the results with their own clients and keys.
"""

from __future__ import annotations

import email
import email.policy

from room_commands import encrypted_event, newcomer

from secir_bot import mime
from secir_bot.commands import (
    Announce,
    Attachment,
    Effect,
    Front,
    InviteToRoom,
    NotifyAdmins,
    RemoveFromRooms,
    RotateRoomKeys,
    SendMail,
)
from secir_bot.commands.effects import dumps
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World, notices
from secir_bot.store.effects import EffectRow


def queue(world: World, *effects: Effect) -> list[int]:
    assert world.app is not None
    store = world.app.store
    with store.transaction() as tx:
        ids = store.effects.record(
            tx, [dumps(e) for e in effects], actor="@test:x", action="test.effects", now=1.0
        )
    world.app.executor.wake()
    return ids


async def membership(world: World, user_id: str) -> str:
    assert world.app is not None
    return await world.app.matrix.actions.membership(world.incident_room, user_id)


async def test_effects_each_carried_out_once(world: World) -> None:
    assert world.app is not None and world.admin is not None
    bob = world.mail["bob"]
    dave = await newcomer(world, "dave")
    queue(
        world,
        NotifyAdmins("EFX-ADMINS for the control room"),
        Announce("EFX-ANNOUNCE to everyone"),
        SendMail(
            to=(bob.address,),
            subject="EFX-LETTER subject",
            body="EFX-LETTER body, encrypted to Bob",
            encrypt_to=(bob.fingerprint,),
            attachments=(Attachment("note.txt", "text/plain", b"EFX-ATTACHED"),),
        ),
        SendMail(to=(bob.address,), subject="EFX-SIGNED invitation", body="EFX-SIGNED body"),
        InviteToRoom(dave.user_id, Front.INCIDENT_ROOM),
        InviteToRoom(dave.user_id, Front.INCIDENT_ROOM),  # a repeat changes nothing
    )
    await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "EFX-ADMINS" in e.body, what="admins told"
    )
    announced = await world.mx["alice"].wait_for_event(
        lambda e: e.room_id == world.incident_room and "EFX-ANNOUNCE" in e.body,
        what="the announcement in the room",
    )
    assert announced.msgtype == "m.notice" and announced.decrypted
    mail = await bob.wait_for_mail(lambda m: "EFX-ANNOUNCE" in m.text, what="the announcement")
    assert mail.decrypted and mail.signer == world.list_fpr
    letter = await bob.wait_for_mail(lambda m: "EFX-LETTER body" in m.text, what="the letter")
    assert letter.decrypted and letter.signer == world.list_fpr
    inner = email.message_from_bytes(letter.plaintext, policy=email.policy.default)
    attached = [(p.get_filename(), p.get_payload(decode=True)) for p in inner.iter_attachments()]
    assert attached == [("note.txt", b"EFX-ATTACHED")]

    # Signed only (no key to encrypt to): the list key's signature over exactly the part.
    signed = await bob.wait_for_mail(
        lambda m: "EFX-SIGNED" in str(m.headers.get("Subject", "")), what="the signed mail"
    )
    msg = email.message_from_bytes(signed.raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/signed"
    part, signature = mime.split_multipart(signed.raw, str(msg.get_boundary()))
    verified = await bob.keyring.verify_detached(part, signature)
    assert verified.valid and verified.signer == world.list_fpr
    assert b"EFX-SIGNED body" in part

    await world.admin.wait_joined(world.incident_room, [dave.user_id])
    await wait_until(lambda: not world.app.store.effects.pending(), 20, "every effect done")  # type: ignore[union-attr]

    # Removal: kicked; asked again (a crash before it was marked done), nothing more happens.
    queue(world, RemoveFromRooms(dave.user_id, "EFX test"), RemoveFromRooms(dave.user_id, "again"))
    await wait_until(lambda: not world.app.store.effects.pending(), 20, "removals done")  # type: ignore[union-attr]
    assert await membership(world, dave.user_id) == "leave"
    assert sum("EFX-ADMINS" in n for n in await notices(world)) == 1


async def test_effects_repeated_after_a_crash_are_the_same(world: World) -> None:
    """A crash between doing an effect and marking it done: doing it again makes the same
    mail (same Message-ID, so the outbox and the readers see one mail) and no new invite."""
    assert world.app is not None and world.admin is not None
    executor = world.app.executor
    carol = world.matrix_ids["carol"]
    bob = world.mail["bob"]
    mail = SendMail(to=(bob.address,), subject="s", body="b", encrypt_to=(bob.fingerprint,))
    row = EffectRow(991, 1234.5, "@test:x", "test.crash", dumps(mail))
    first = await executor._perform(row)
    second = await executor._perform(row)
    ids = [mime.message_id_of(d.payload) for d in (*first, *second)]
    assert len(ids) == 2 and ids[0] == ids[1]
    invite = EffectRow(
        992, 1.0, "@test:x", "test.crash", dumps(InviteToRoom(carol, Front.INCIDENT_ROOM))
    )
    assert await executor._perform(invite) == []  # carol is in the room: done, no error
    assert await membership(world, carol) == "join"


async def test_effect_that_fails_is_kept_retried_and_told(world: World) -> None:
    """An effect the homeserver refuses stays pending (never lost), is retried with
    backoff, and the admins are told once; the effects after it go on."""
    assert world.app is not None and world.admin is not None
    # The bot (power 50) may not remove the room's creator: Synapse refuses every time.
    failing, later = queue(
        world,
        RemoveFromRooms(world.admin.user_id, "cannot be done"),
        NotifyAdmins("EFX-AFTER the failing one"),
    )
    await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "EFX-AFTER" in e.body, what="later effect"
    )
    told = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and f"effect {failing} " in e.body,
        what="the admins told of the failing effect",
    )
    assert "keeps failing" in told.body
    pending = [r.id for r in world.app.store.effects.pending()]
    assert failing in pending and later not in pending
    attempts, _ = world.app.executor._failed[failing]
    assert attempts >= 1
    assert await membership(world, world.admin.user_id) == "join"


async def test_rotate_room_keys_starts_a_new_session(world: World) -> None:
    """RotateRoomKeys: the next message in the room uses a new room key, although nobody's
    devices changed (so nio itself had no reason to start one)."""
    assert world.app is not None and world.admin is not None
    bob, carol, room = world.mail["bob"], world.mx["carol"], world.incident_room

    async def post(text: str) -> str:
        await bob.send(world.list_address, world.list_fpr, "s", text)
        seen = await carol.wait_for_event(lambda e: text in e.body, what=text)
        return (await encrypted_event(world.admin, room, seen.event_id)).session_id  # type: ignore[arg-type]

    first = await post("EFX-KEY-1")
    assert await post("EFX-KEY-2") == first  # the same key while nothing happens
    queue(world, RotateRoomKeys(Front.INCIDENT_ROOM))
    await wait_until(lambda: not world.app.store.effects.pending(), 20, "rotated")  # type: ignore[union-attr]
    assert await post("EFX-KEY-3") != first
