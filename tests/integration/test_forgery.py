"""Forgery end to end: an outsider tries to post as a member (issue 5, F1).

The outsider has the list's public key (anyone has) and one genuine clear-signed text of a
member made for something else. Everything goes through Postfix, Dovecot, the bot and
Synapse; the members read with their own clients and keys.
"""

from __future__ import annotations

from test_rejections import assert_not_relayed, positive_control, wait_notice

from secir_bot.sandbox.operators import MailOperator
from secir_bot.sandbox.world import World


async def test_f1_inline_block_that_gpg_skips_is_never_shown_as_the_members(
    world: World, outsider: MailOperator
) -> None:
    alice = world.mail["alice"]
    # A signature Alice made for something else, e.g. a release announcement.
    genuine = await alice.clearsign(b"Release 4.2 is tagged.\n")
    # A first block that gpg does not take for armor (a trailing X, a leading tab) holds the
    # attacker's text; gpg skips it and verifies Alice's genuine block after it.
    for n, header in enumerate(
        (b"-----BEGIN PGP SIGNED MESSAGE-----X", b"\t-----BEGIN PGP SIGNED MESSAGE-----")
    ):
        forged = (
            header + b"\nHash: SHA256\n\nF1-FORGED-" + str(n).encode() + b" remove example.nl "
            b"from the zone now\n\n" + genuine
        )
        _, data = await outsider.inline_mail(
            world.list_address, world.list_fpr, forged, sender=f"{alice.name} <{alice.address}>"
        )
        await outsider.send_raw(world.list_address, data)
        await wait_notice(world, "Mail rejected", "not exactly one clear-signed text")
    # A genuine inline mail (clear-signed, then encrypted) still arrives, with its text.
    text = b"F1-GENUINE resolver patched\n- dash line\n"
    _, data = await alice.inline_mail(
        world.list_address, world.list_fpr, await alice.clearsign(text)
    )
    await alice.send_raw(world.list_address, data)
    event = await world.mx["carol"].wait_for_event(lambda e: "F1-GENUINE" in e.body)
    assert "Alice Jansen (.nl)" in event.body
    assert "F1-GENUINE resolver patched\n- dash line" in event.body
    mail = await world.mail["bob"].wait_for_mail(lambda m: "F1-GENUINE" in m.text)
    assert mail.signer == world.list_fpr
    await positive_control(world, "all clear after the forgeries")
    await assert_not_relayed(world, "F1-FORGED")
    await assert_not_relayed(world, "Release 4.2")


async def test_f5_a_mail_sent_first_under_a_members_message_id_does_not_decide_hers(
    world: World, outsider: MailOperator
) -> None:
    alice = world.mail["alice"]
    msgid, genuine = await alice.compose(
        world.list_address, world.list_fpr, "F5 status", "F5-GENUINE all resolvers patched"
    )
    # Mallory learnt the Message-ID (it travels in clear) and sends junk under it first.
    squatter = (
        f"From: {alice.name} <{alice.address}>\r\nTo: {world.list_address}\r\n"
        f"Subject: F5 squat\r\nMessage-ID: {msgid}\r\n\r\nF5-SQUAT not encrypted\r\n"
    ).encode()
    await outsider.send_raw(world.list_address, squatter)
    await wait_notice(world, "Mail rejected", "not encrypted")

    await alice.send_raw(world.list_address, genuine)

    await world.mx["carol"].wait_for_event(lambda e: "F5-GENUINE" in e.body)
    await world.mail["bob"].wait_for_mail(lambda m: "F5-GENUINE" in m.text)
    await assert_not_relayed(world, "F5-SQUAT")
