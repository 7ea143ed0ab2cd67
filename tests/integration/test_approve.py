"""The D2 procedure on the real stack as far as the Matrix front end goes (issue 9): an
admin opens the case in the control room, the invitation goes out signed by the list
key, the nominee proves their key and Matrix account, ``!approve`` subscribes them: the
welcome mail with the list key, the room invitation, "new member" on both channels, and
the new member posts and receives.

The contact's nomination mail and the nominee's signed proof are read by the mail front
end (another part of issue 9); until it is wired, this test hands their contents to the
subscription procedure the way that front end will, after the real mail went through
Postfix and the nominee's own gpg."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import shutil
import tempfile
from pathlib import Path

from room_commands import command, newcomer

from secir_bot import mime
from secir_bot.cases import CHALLENGE_PATTERN, CaseState
from secir_bot.commands import subscription
from secir_bot.crypto import Keyring
from secir_bot.sandbox.operators import MailOperator, wait_until
from secir_bot.sandbox.whois import WhoisResponder, iana_records
from secir_bot.sandbox.world import World


async def mail_user(world: World, key: str, name: str, ring: Keyring) -> MailOperator:
    address = world.address(key)
    await world._mail_user(address, f"pw-{key}")
    return MailOperator(
        address=address,
        name=name,
        keyring=ring,
        fingerprint=await ring.generate(name, address),
        password=f"pw-{key}",
        smtp_port=world.smtp_port,
        imap_port=world.imap_port,
        host=world.mail_host,
    )


async def test_f9_approve_subscribes_invites_announces(world: World) -> None:
    assert world.admin is not None and world.app is not None and world.config is not None
    app, admin, control = world.app, world.admin, world.control_room
    homes = [Path(tempfile.mkdtemp(prefix="gd")) for _ in range(2)]
    rings = [Keyring.create(h) for h in homes]
    try:
        contact = await mail_user(world, "hostmaster", "Hostmaster", rings[0])
        dave = await mail_user(world, "dave", "Dave Weber", rings[1])
        await dave.keyring.import_key(await world.keyrings["bob"].export_public(world.list_fpr))
        dave_mx = await newcomer(world, "dave")

        # The admin opens the case (with an address of their own: no whois in this test).
        opened = await command(
            world, admin, control, f"!invite-via .de {contact.address} IANA record is stale"
        )
        assert "Case #1 opened for .de" in opened.body
        invitation = await contact.wait_for_mail(
            lambda m: "nominate" in str(m.headers.get("Subject", "")), what="the invitation"
        )
        msg = email.message_from_bytes(invitation.raw, policy=email.policy.compat32)
        part, signature = mime.split_multipart(invitation.raw, str(msg.get_boundary()))
        await contact.keyring.import_key(await world.keyrings["bob"].export_public(world.list_fpr))
        assert (await contact.keyring.verify_detached(part, signature)).signer == world.list_fpr
        code = re.search(rb"^code: (\S+)\r?$", part, re.M)
        assert code is not None

        # The contact's nomination (read by the mail front end once wired).
        ctx = app.commands
        nominated = await subscription.nomination_received(
            ctx,
            sender=contact.address,
            cc=(),
            body=f"code: {code.group(1).decode()}\n\nname: Dave Weber\nemail: {dave.address}\n"
            f"phone: +49 69 1234567\nmatrix: {dave_mx.user_id}\n"
            + await dave.keyring.export_public(dave.fingerprint),
            ref="<nomination@test>",
        )
        assert nominated.ok, nominated.text
        app.executor.wake()
        challenge_mail = await dave.wait_for_mail(
            lambda m: "SECIR-PROOF" in m.text, what="the challenge"
        )
        assert challenge_mail.decrypted  # only Dave's key opens it
        challenge = CHALLENGE_PATTERN.search(challenge_mail.text)
        assert challenge is not None
        proved = subscription.proof_received(
            ctx, signer=dave.fingerprint, text=challenge.group(0), ref="<proof@test>"
        )
        assert proved.ok, proved.text
        # The bot's invitation to a direct room: Dave's own client accepts it, which the bot
        # reads as his Matrix proof; the case is then ready and the admins are told.
        direct = await wait_until(
            lambda: app.store.kv.get(f"matrix.direct_room_for.{dave_mx.user_id}"),
            20,
            "a direct room opened for Dave",
        )
        thanked = await dave_mx.wait_for_event(
            lambda e: e.room_id == direct and "is confirmed" in e.body, what="Dave thanked"
        )
        assert thanked.msgtype == "m.notice"
        await admin.wait_for_event(
            lambda e: e.room_id == control and "case #1 (.de) is ready" in e.body,
            what="the admins told the case is ready",
        )
        case = app.store.cases.get(1)
        assert case is not None and case.state is CaseState.READY

        approved = await command(world, admin, control, "!approve 1")
        assert "case #1 approved: Dave Weber subscribed for .de" in approved.body
        welcome = await dave.wait_for_mail(lambda m: "Welcome to" in m.text, what="the welcome")
        assert welcome.decrypted and welcome.signer == world.list_fpr
        inner = email.message_from_bytes(welcome.plaintext, policy=email.policy.default)
        keys = [p.get_payload(decode=True) for p in inner.iter_attachments()]
        assert keys and b"BEGIN PGP PUBLIC KEY BLOCK" in keys[0]
        await dave_mx.wait_joined(world.incident_room, [dave_mx.user_id])
        carol, bob = world.mx["carol"], world.mail["bob"]
        await carol.wait_for_event(
            lambda e: "new member: .de (Dave Weber)" in e.body, what="the announcement"
        )
        await bob.wait_for_mail(lambda m: "new member: .de" in m.text, what="the announcement")

        # The new member posts and receives on both channels.
        await dave_mx.know_devices_of(world.config.matrix.user_id)
        await dave_mx.send(world.incident_room, "APPROVE-DAVE-POST from the room")
        await bob.wait_for_mail(lambda m: "APPROVE-DAVE-POST" in m.text, what="Dave's post")
        await bob.send(world.list_address, world.list_fpr, "hello", "APPROVE-BOB-POST")
        await dave_mx.wait_for_event(lambda e: "APPROVE-BOB-POST" in e.body, what="in the room")
        got = await dave.wait_for_mail(lambda m: "APPROVE-BOB-POST" in m.text, what="by mail")
        assert got.decrypted
        actions = [e.action for e in app.store.audit.entries()]
        assert actions == [
            "case.invite-via",
            "case.nominate",
            "case.proof",
            "case.matrix-joined",
            "case.approve",
        ]
    finally:
        for ring in rings:
            await asyncio.to_thread(ring.close)
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


async def test_f9_invite_asks_iana_over_whois(world_unstarted: World) -> None:
    """``!invite .рф`` in the control room: the administrative contact comes from the
    (recorded) IANA answer of the whois responder, never from the admin; the invitation
    reaches that address signed by the list key; bad input changes nothing."""
    world = world_unstarted
    async with WhoisResponder(iana_records(world.domain)) as responder:
        await world.setup(
            # A [whois] table after the [delivery] lines: the sandbox responder on loopback.
            delivery_extra=f'\n[whois]\nhost = "127.0.0.1"\nport = {responder.port}\ntimeout = 2'
        )
        await world.start_bot()
        assert world.admin is not None and world.app is not None
        admin, control = world.admin, world.control_room
        contact_ring_home = Path(tempfile.mkdtemp(prefix="gc"))
        ring = Keyring.create(contact_ring_home)
        try:
            record = iana_records(world.domain)["xn--p1ai"]
            found = re.search(
                r"(?m)^contact: +administrative\r?\n(?:.*\r?\n)*?e-mail: +(\S+)", record
            )
            assert found is not None
            contact_address = found.group(1)
            await world._mail_user(contact_address, "pw-contact")
            contact = MailOperator(
                address=contact_address,
                name="Contact",
                keyring=ring,
                fingerprint="",
                password="pw-contact",
                smtp_port=world.smtp_port,
                imap_port=world.imap_port,
                host=world.mail_host,
            )
            for bad, why in (
                ("!invite .com", "generic"),
                ("!invite .zz", ".zz"),
                ("!invite .nl not-an-address", "usage: !invite"),
            ):
                refused = await command(world, admin, control, bad)
                assert why in refused.body, refused.body
            assert world.app.store.cases.open_cases() == []
            opened = await command(world, admin, control, "!invite .рф")
            assert "Case #1 opened for .рф" in opened.body
            assert f"IANA's administrative contact {contact_address}" in opened.body
            assert responder.queries == ["xn--p1ai"]
            invitation = await contact.wait_for_mail(
                lambda m: b"code: " in m.raw, what="the invitation"
            )
            assert b"multipart/signed" in invitation.raw
            entry = world.app.store.audit.entries()[-1]
            assert entry.action == "case.invite" and entry.evidence_map.get("whois_sha256")
        finally:
            await asyncio.to_thread(ring.close)
            shutil.rmtree(contact_ring_home, ignore_errors=True)
