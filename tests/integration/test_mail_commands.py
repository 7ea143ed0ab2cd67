"""Issue 9, the email front end: members' commands by mail, through Postfix, Dovecot and gpg.

A member's signed and encrypted mail to the request address (``list+request@domain``, which
Dovecot delivers to the list's own mailbox) is read as commands, one per line, and answered
by ONE mail signed by the list and encrypted to the member. The signed To decides that it
is a command mail; the bare words of the List-Help and List-Unsubscribe links work on the
list address too. Bad command mail is refused the way bad posts are, and changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
import subprocess

import pytest
from servers import GpgWorld
from test_rejections import positive_control, wait_notice

from secir_bot.commands.effects import loads
from secir_bot.mailfront import MailFront
from secir_bot.sandbox.operators import MailOperator, ReceivedMail, wait_until
from secir_bot.sandbox.world import World

ANSWERS = "Answers to your commands"


def request_address(world: World) -> str:
    return world.list_address.replace("@", "+request@")


def answers(op: MailOperator) -> list[ReceivedMail]:
    return [m for m in op.seen if ANSWERS in m.text]


def member(world: World, key: str) -> object:
    assert world.app is not None
    return world.app.store.members.by_email(world.address(key))


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def v6_public_key() -> str:
    """An armoured OpenPGP v6 public-key packet (RFC 9580, Ed25519), which gpg 2.2 cannot use."""
    body = b"\x06" + struct.pack(">I", 1700000000) + b"\x1b" + struct.pack(">I", 32)
    packet = bytes([0xC6, len(body) + 32]) + body + os.urandom(32)
    crc = base64.b64encode(_crc24(packet).to_bytes(3, "big")).decode()
    armored = base64.b64encode(packet).decode()
    block = "PGP PUBLIC KEY BLOCK-----\n"
    return f"-----BEGIN {block}\n{armored}\n={crc}\n-----END {block}"


def effects_text(world: World) -> str:
    assert world.app is not None
    return "\n".join(str(loads(row.effect)) for row in world.app.store.effects.pending())


async def test_i9_commands_by_mail_get_one_signed_encrypted_answer(world: World) -> None:
    alice = world.mail["alice"]
    body = (
        "help\nfrobnicate now\nhelp key-update\nconfirm ABCDE-FGHJK\n\n"
        "-- \nAlice, .nl registry\nhelp\n"
    )
    await alice.send(request_address(world), world.list_fpr, "my commands", body)
    answer = await alice.wait_for_mail(lambda m: ANSWERS in m.text, what="the answer")
    assert answer.decrypted and answer.signer == world.list_fpr
    assert answer.headers["Auto-Submitted"] == "auto-replied"
    assert answer.headers["Reply-To"] == request_address(world)  # a reply is commands again
    text = answer.text
    assert "> help\n" in text and "leave - leave the list" in text  # mail usage: no "!"
    # Named as the member writes it by mail: no "!" (that is Matrix's spelling).
    assert "> frobnicate now\nNOT DONE: there is no command frobnicate; help lists" in text
    assert "key-update - replace your key with a new one" in text
    assert "> confirm ABCDE-FGHJK\nNOT DONE: that confirmation code is not known" in text
    assert text.count("> help") == 2  # the line after the signature delimiter is not read
    # Commands are never posted: a later post arrives, the command mail never did.
    await positive_control(world, "all clear after commands by mail")
    assert not [e for e in world.mx["carol"].events if "frobnicate" in e.body]
    assert not [m for m in world.mail["bob"].seen if "frobnicate" in m.text]
    assert len(answers(alice)) == 1


async def test_i9_list_help_and_unsubscribe_words_are_commands_now(world: World) -> None:
    """The List-Help link's mail (subject "help" to the list address) is answered by mail;
    it was refused with "commands by mail are not available yet" before."""
    alice = world.mail["alice"]
    await alice.send(world.list_address, world.list_fpr, "help", "help")
    answer = await alice.wait_for_mail(lambda m: ANSWERS in m.text, what="the help")
    assert "leave - leave the list" in answer.text
    assert not [m for m in alice.seen if "was not relayed" in m.text]
    await positive_control(world, "all clear after the help word")
    assert not [e for e in world.mx["carol"].events if e.body.strip() == "help"]


async def test_i9_unsubscribe_by_mail_removes_and_warns_the_admins(world: World) -> None:
    bob = world.mail["bob"]  # the only contact of .br
    await bob.send(request_address(world), world.list_fpr, "bye", "unsubscribe\nhelp")
    answer = await bob.wait_for_mail(lambda m: ANSWERS in m.text, what="the answer")
    assert "You have left SECIR" in answer.text
    # The line after it runs as what Bob is now: not at all.
    assert "1 more line(s) not run" in answer.text and "> help" not in answer.text
    assert getattr(member(world, "bob"), "status", None) == "left"
    # The effects, carried out by the executor: the admins warned, the list told.
    await wait_notice(world, "left the list", "WARNING: .br has no contact left")
    await world.mx["carol"].wait_for_event(lambda e: "member left: Bob Silva (.br)" in e.body)
    # From now on Bob's signed mail is refused, and he is not mailed the list's posts.
    await bob.send(world.list_address, world.list_fpr, "still here?", "BOB-AFTER-LEAVING")
    await wait_notice(world, "Mail rejected", "a member who is left")
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "AFTER-BOB-LEFT")
    await world.mx["carol"].wait_for_event(lambda e: "AFTER-BOB-LEFT" in e.body)
    assert not [e for e in world.mx["carol"].events if "BOB-AFTER-LEAVING" in e.body]


async def test_i9_the_signed_to_decides_not_the_outer_one(world: World) -> None:
    """A member's signed post, sent on to the request address by someone who captured it
    (or a client that signs another To), runs no command."""
    alice = world.mail["alice"]
    await alice.send(
        request_address(world),
        world.list_fpr,
        "leave",
        "leave",
        inner_headers={"To": world.list_address},
    )
    await wait_notice(world, "Mail rejected", "addressed to others, not to")
    refusal = await alice.wait_for_mail(lambda m: "was not relayed" in m.text)
    assert "runs no command" in refusal.text
    assert getattr(member(world, "alice"), "status", None) == "active"
    await positive_control(world, "all clear after the unsigned To")
    assert not answers(alice)


async def test_i9_a_replayed_command_mail_runs_nothing(world: World) -> None:
    alice = world.mail["alice"]
    msgid, data = await alice.compose(request_address(world), world.list_fpr, "c", "help")
    await alice.send_raw(request_address(world), data)
    await alice.wait_for_mail(lambda m: ANSWERS in m.text, what="the first answer")
    replay = data.replace(msgid.encode(), b"<replayed-cmd@attacker.test>")
    await alice.send_raw(request_address(world), replay)
    await wait_notice(world, "Mail rejected", "received before")
    await positive_control(world, "all clear after the replayed commands")
    assert len(answers(alice)) == 1


async def test_f1_a_crash_before_the_answer_loses_nothing_and_runs_nothing_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot stops after a command mail's commands ran and before its answer was queued
    (the seam: the answer's rendering fails, and the item is put back undecided as a kill
    leaves it). Decided again, it runs nothing twice and the member gets one answer."""
    assert world.app is not None
    app = world.app
    front = app.decider.requests
    assert isinstance(front, MailFront)
    bob = world.mail["bob"]
    msgid, data = await bob.compose(request_address(world), world.list_fpr, "bye", "unsubscribe")

    async def crash(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the bot stops here")

    monkeypatch.setattr(front.mail, "letter", crash)
    await bob.send_raw(request_address(world), data)
    await wait_until(
        lambda: (
            getattr(member(world, "bob"), "status", None) == "left"
            and app.store.db.execute(
                "SELECT COUNT(*) FROM inbox WHERE state = 'shunted'"
            ).fetchone()[0]
            == 1
        ),
        timeout=30,
        what="the commands ran and the answer was not queued",
    )
    monkeypatch.undo()
    # What a kill leaves: the item undecided (its signature and its change committed).
    with app.store.transaction() as tx:
        tx.execute(
            "UPDATE inbox SET state = 'new', reason = NULL, decided_at = NULL "
            "WHERE state = 'shunted'"
        )
    # Any new mail wakes the decider, which decides the pending items, oldest first.
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "AFTER-RESTART")
    answer = await bob.wait_for_mail(lambda m: "The bot stopped while" in m.text)
    assert answer.decrypted and answer.signer == world.list_fpr
    left = app.store.audit.all_by_ref(msgid)
    assert len(left) == 1 and f"audit entry {left[0].seq}" in answer.text
    await world.mail["alice"].send(world.list_address, world.list_fpr, "s", "AFTER-ANSWER")
    await world.mx["carol"].wait_for_event(lambda e: "AFTER-ANSWER" in e.body)
    box = [await bob.read(raw) for raw in await bob.fetch_all()]
    assert len([m for m in box if ANSWERS in m.text or m.subject == ANSWERS]) == 1


async def test_i9_unencrypted_or_outsider_command_mail_changes_nothing(
    world: World, outsider: MailOperator
) -> None:
    bob = world.mail["bob"]
    # Unencrypted: nothing proves the sender, so no answer; Bob stays.
    await bob.send(request_address(world), None, "unsubscribe", "unsubscribe", fmt="plain")
    await wait_notice(world, "Mail rejected", "not encrypted")
    # Signed and encrypted, but not by a member's key.
    await outsider.send(request_address(world), world.list_fpr, "x", "help")
    await wait_notice(world, "Mail rejected", "signature does not verify")
    await positive_control(world, "all clear after the outsiders' commands")
    assert getattr(member(world, "bob"), "status", None) == "active"
    assert not answers(bob)


async def test_i9_key_update_by_mail(world: World) -> None:
    alice = world.mail["alice"]
    address = world.address("alice")
    old = alice.fingerprint
    bad = await asyncio.to_thread(
        GpgWorld.create,
        [
            (address, "Alice Expired", "expired"),
            ("someone-else@test.example", "Not Alice"),
        ],
    )
    try:
        expired = bad.export_public(address)
        elsewhere = bad.export_public("someone-else@test.example")
    finally:
        await asyncio.to_thread(bad.close)
    v6 = v6_public_key()
    body = f"key update\n{expired}\nkey update\n{elsewhere}\nkey update\n{v6}\nkey update\n"
    await alice.send(request_address(world), world.list_fpr, "keys", body)
    refused = await alice.wait_for_mail(lambda m: ANSWERS in m.text, what="the refusals")
    assert refused.text.count("NOT DONE: your new key was not accepted") == 3
    assert "expired" in refused.text
    assert f"no user id with {address}" in refused.text or address in refused.text
    assert "gpg cannot read that key" in refused.text
    assert "NOT DONE: no key found: paste your new public key" in refused.text
    assert getattr(member(world, "alice"), "fingerprint", None) == old

    # A good new key, in a mail signed with the old one.
    new = await alice.keyring.generate("Alice Jansen", address)
    armored = await alice.keyring.export_public(new)
    await alice.send(request_address(world), world.list_fpr, "k", f"key update\n{armored}")
    done = await alice.wait_for_mail(
        lambda m: ANSWERS in m.text and "your key is now" in m.text, what="the rotation"
    )
    assert new in done.text
    assert getattr(member(world, "alice"), "fingerprint", None) == new
    await wait_notice(world, "changed their key", new)
    # Her posts are now signed with the new key, and the old key's are refused.
    await alice.send(world.list_address, world.list_fpr, "old", "OLD-KEY-POST")
    await wait_notice(world, "Mail rejected", old)
    await alice.send(world.list_address, world.list_fpr, "new", "NEW-KEY-POST", signing_fpr=new)
    await world.mx["carol"].wait_for_event(lambda e: "NEW-KEY-POST" in e.body)
    got = await world.mail["bob"].wait_for_mail(lambda m: "NEW-KEY-POST" in m.text)
    assert re.search(r"Alice", got.text)
    assert not [e for e in world.mx["carol"].events if "OLD-KEY-POST" in e.body]


async def key_update_by_mail(
    world: World, attachments: tuple[tuple[str, str, bytes], ...], answer: str
) -> ReceivedMail:
    """Alice's ``key update`` mail with ``attachments`` and no key pasted; the list's answer
    to her, once it says ``answer``."""
    alice = world.mail["alice"]
    await alice.send(
        request_address(world), world.list_fpr, "k", "key update\n", attachments=attachments
    )
    return await alice.wait_for_mail(
        lambda m: ANSWERS in m.text and answer in m.text, what=f"the answer '{answer}'"
    )


async def test_f2_key_update_with_the_new_key_attached(world: World) -> None:
    """The new key attached as a file inside the signed part (multipart/mixed, as
    Thunderbird attaches it), with no key pasted below ``key update``."""
    alice = world.mail["alice"]
    address = world.address("alice")
    new = await alice.keyring.generate("Alice Jansen", address)
    armored = await alice.keyring.export_public(new)
    attached = ((f"OpenPGP_0x{new[-16:]}.asc", "application/pgp-keys", armored.encode()),)
    done = await key_update_by_mail(world, attached, "your key is now")
    assert new in done.text
    assert getattr(member(world, "alice"), "fingerprint", None) == new
    await wait_notice(world, "changed their key", new)


async def test_f2_key_update_sets_aside_the_current_key_thunderbird_attaches(
    world: World,
) -> None:
    """Thunderbird, set to attach the sender's public key, attaches the key it signs with
    beside the new one: the current key is set aside and the new one taken. Two new keys
    are refused with the reason, and nothing changes."""
    alice = world.mail["alice"]
    address = world.address("alice")
    old = getattr(member(world, "alice"), "fingerprint", "")
    own = (
        f"OpenPGP_0x{old[-16:]}.asc",
        "application/pgp-keys",
        (await alice.keyring.export_public(old)).encode(),
    )
    first = await alice.keyring.generate("Alice Jansen", address)
    second = await alice.keyring.generate("Alice Jansen", address)
    offered = [
        (
            f"OpenPGP_0x{f[-16:]}.asc",
            "application/pgp-keys",
            (await alice.keyring.export_public(f)).encode(),
        )
        for f in (first, second)
    ]
    refused = await key_update_by_mail(world, (own, *offered), "NOT DONE")
    assert "give exactly one public key (found 2)" in refused.text
    assert getattr(member(world, "alice"), "fingerprint", None) == old
    done = await key_update_by_mail(world, (own, offered[0]), "your key is now")
    assert first in done.text
    assert getattr(member(world, "alice"), "fingerprint", None) == first


def _binary_export(home: object, *args: str) -> bytes:
    """``gpg --export`` as a person on a shell runs it: binary, no armour."""
    command = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    return subprocess.run(
        [*command, "--passphrase", "", *args], check=True, capture_output=True
    ).stdout


async def test_f2_key_update_with_a_binary_key_file_attached(world: World) -> None:
    """A key file from ``gpg --export`` (binary, named .gpg, as mutt attaches it: no key
    type) is read like an armoured one; a binary file with the secret key is refused with
    the warning, and nothing changes."""
    alice = world.mail["alice"]
    address = world.address("alice")
    old = getattr(member(world, "alice"), "fingerprint", "")
    new = await alice.keyring.generate("Alice Jansen", address)
    home = alice.keyring.home
    secret = await asyncio.to_thread(_binary_export, home, "--export-secret-keys", new)
    public = await asyncio.to_thread(_binary_export, home, "--export", new)
    assert b"-----BEGIN" not in public and len(public) > 100
    attached = (("alice-new.gpg", "application/octet-stream", secret),)
    refused = await key_update_by_mail(world, attached, "NOT DONE")
    assert "SECRET key" in refused.text
    assert getattr(member(world, "alice"), "fingerprint", None) == old
    attached = (("alice-new.gpg", "application/octet-stream", public),)
    done = await key_update_by_mail(world, attached, "your key is now")
    assert new in done.text
    assert getattr(member(world, "alice"), "fingerprint", None) == new


async def test_i9_made_up_codes_cannot_flood_the_control_room(world_unstarted: World) -> None:
    """Plain mail with a made-up nomination code is cheap to send in bulk: each is refused,
    its sender (unproven) is never answered, and the admins hear of it at most
    ``delivery.notices_per_hour`` times per sender."""
    world = world_unstarted
    await world.setup(delivery_extra="notices_per_hour = 2")
    await world.start_bot()
    alice = world.mail["alice"]
    for n in range(5):
        fake = (
            f"From: Someone <victim@test.example>\r\nTo: {request_address(world)}\r\n"
            f"Subject: nomination\r\nMessage-ID: <FAKE-CODE-{n}@attacker.test>\r\n\r\n"
            f"code: AAAAA-BBBBB-CCCCC-DDDD{n}\r\n\r\nname: X\r\nemail: x@test.example\r\n"
        ).encode()
        await alice.send_raw(request_address(world), fake)
    await positive_control(world, "all clear after the made-up codes")
    assert world.app is not None
    rows = world.app.store.db.execute(
        "SELECT target FROM outbox WHERE instr(payload, ?) > 0", [b"A nomination on"]
    ).fetchall()
    assert [str(r[0]) for r in rows] == [world.control_room] * 2
    effects = world.app.store.db.execute("SELECT COUNT(*) FROM command_effects").fetchone()
    assert effects[0] == 0  # no answer queued for anyone
