"""Only what was signed is shown as the member's (issue 5, F2 and F3), end to end.

A signature covers the signed entity and nothing around it: not the cleartext Subject,
not the envelope's thread headers, and not who the mail was meant for.
"""

from __future__ import annotations

from test_rejections import assert_not_relayed, positive_control, wait_notice

from secir_bot.sandbox.operators import MailOperator
from secir_bot.sandbox.world import World
from secir_bot.threads import UNADDRESSED_NOTE, UNSIGNED_THREAD_NOTE


async def test_f2_signed_mail_sent_elsewhere_is_refused_as_a_forward(
    world: World, outsider: MailOperator
) -> None:
    alice = world.mail["alice"]
    # Alice signed this for a colleague elsewhere; Mallory got a copy and encrypts it to
    # the list key (OpenPGP does not bind a signature to its recipients).
    entity = await alice.signed_entity(
        "colleague@elsewhere.test", "Our registrar contact", "F2-FORWARD call me at +31 ..."
    )
    _, data = await outsider.encrypted_mail(
        world.list_address, world.list_fpr, entity, sender=f"{alice.name} <{alice.address}>"
    )
    await outsider.send_raw(world.list_address, data)

    await wait_notice(world, "Mail rejected", "addressed to others, not to the list")
    await positive_control(world, "all clear after the forward")
    await assert_not_relayed(world, "F2-FORWARD")
    # The control mail names the list in its protected headers: no mark on it.
    control = next(e for e in world.mx["carol"].events if "after the forward" in e.body)
    assert UNADDRESSED_NOTE not in control.body


async def test_f2_signed_content_naming_no_recipient_is_marked_in_both_channels(
    world: World,
) -> None:
    bob = world.mail["bob"]
    await bob.send(world.list_address, world.list_fpr, "-", "F2-INLINE no recipients", fmt="inline")
    await bob.send(
        world.list_address,
        world.list_fpr,
        "F2 no To",
        "F2-NOTO protected subject only",
        inner_headers={"To": None},
    )
    for marker in ("F2-INLINE", "F2-NOTO"):
        event = await world.mx["carol"].wait_for_event(lambda e, m=marker: m in e.body)
        assert UNADDRESSED_NOTE in event.body
        mail = await world.mail["alice"].wait_for_mail(lambda m, k=marker: k in m.text)
        assert UNADDRESSED_NOTE in mail.text.replace("\n", " ")


async def test_f3_cleartext_subjects_are_never_shown(world: World) -> None:
    bob, carol, alice = world.mail["bob"], world.mx["carol"], world.mail["alice"]
    await bob.send(
        world.list_address,
        world.list_fpr,
        "F3 CLEARTEXT one",
        "F3 signed line one\nmore",
        fmt="inline",
    )
    _, data = await bob.compose(
        world.list_address,
        world.list_fpr,
        "-",
        "F3 signed line two",
        inner_headers={"Subject": None},
    )
    await bob.send_raw(
        world.list_address, data.replace(b"Subject: ...", b"Subject: F3 CLEARTEXT two")
    )
    for n in ("one", "two"):
        event = await carol.wait_for_event(lambda e, n=n: f"F3 signed line {n}" in e.body)
        assert event.body.startswith(f"Bob Silva (.br) by email: F3 signed line {n}\n")
        mail = await alice.wait_for_mail(lambda m, n=n: f"F3 signed line {n}" in m.text)
        assert mail.subject == f"F3 signed line {n}"
    assert not [e for e in carol.events if "CLEARTEXT" in e.body]


async def test_f3_a_captured_copy_under_another_subject_shows_the_signed_one(
    world: World, outsider: MailOperator
) -> None:
    bob, carol = world.mail["bob"], world.mx["carol"]
    # Bob's client puts no Subject into the signed part: his text's first line is shown.
    msgid, data = await bob.compose(
        world.list_address,
        world.list_fpr,
        "-",
        "F3 real subject\nF3-CAPTURED nameserver moved",
        inner_headers={"Subject": None},
    )
    # Someone who captured the mail sends it first, under another Subject and Message-ID.
    copy = data.replace(msgid.encode(), b"<captured-f3@attacker.test>").replace(
        b"Subject: ...", b"Subject: F3 URGENT: approve the transfer", 1
    )
    await outsider.send_raw(world.list_address, copy)
    event = await carol.wait_for_event(lambda e: "F3-CAPTURED" in e.body)
    assert event.body.startswith("Bob Silva (.br) by email: F3 real subject\n")
    assert "URGENT" not in event.body
    # Bob's own copy is the same signature: not relayed twice.
    await bob.send_raw(world.list_address, data)
    await wait_notice(world, "Mail rejected", "received before")
    assert len([e for e in carol.events if "F3-CAPTURED" in e.body]) == 1


async def test_f3_unsigned_reply_headers_into_another_members_thread_are_noted(
    world: World,
) -> None:
    alice_mx, carol, bob = world.mx["alice"], world.mx["carol"], world.mail["bob"]
    root_id = await alice_mx.send(world.incident_room, "F3 root: should we suspend it?")
    root_mail = await bob.wait_for_mail(lambda m: "F3 root" in m.text)
    root_msgid = str(root_mail.headers["Message-ID"])
    # Thread headers only in the clear (a client without protected headers, or someone
    # who moved a captured mail into this thread): placed there, with a note.
    await bob.send(
        world.list_address,
        world.list_fpr,
        "Re: F3 root",
        "F3-UNSIGNED-REPLY yes",
        in_reply_to=root_msgid,
        references=(root_msgid,),
        inner_headers={"In-Reply-To": None, "References": None},
    )
    unsigned = await carol.wait_for_event(lambda e: "F3-UNSIGNED-REPLY" in e.body)
    assert unsigned.content["m.relates_to"]["event_id"] == root_id
    assert UNSIGNED_THREAD_NOTE in unsigned.body
    mail = await world.mail["alice"].wait_for_mail(lambda m: "F3-UNSIGNED-REPLY" in m.text)
    assert UNSIGNED_THREAD_NOTE in mail.text.replace("\n", " ")
    # The same reply with signed thread headers: no note.
    await bob.send(
        world.list_address,
        world.list_fpr,
        "Re: F3 root",
        "F3-SIGNED-REPLY yes",
        in_reply_to=root_msgid,
        references=(root_msgid,),
    )
    signed = await carol.wait_for_event(lambda e: "F3-SIGNED-REPLY" in e.body)
    assert signed.content["m.relates_to"]["event_id"] == root_id
    assert UNSIGNED_THREAD_NOTE not in signed.body
