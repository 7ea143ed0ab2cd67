"""Bad input on the list address: never relayed, quarantined, admins told, members answered.

Each test ends with a good mail as a positive control: once it has arrived everywhere, the
bad ones, sent earlier, would have arrived too if they had been relayed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import aioimaplib

from secir_bot.bridges.email import close_imap
from secir_bot.sandbox.operators import SeenEvent, wait_until
from secir_bot.sandbox.world import World, notices


async def folder_messages(world: World, folder: str) -> list[bytes]:
    imap = aioimaplib.IMAP4(host="127.0.0.1", port=world.imap_port, timeout=10)
    out: list[bytes] = []
    try:
        await imap.wait_hello_from_server()
        await imap.login(world.list_address, "pw-list")
        resp = await imap.select(folder)
        if resp.result != "OK":
            return []
        found = await imap.uid_search("ALL")
        for uid in bytes(found.lines[0]).split():
            if uid.isdigit():
                fetched = await imap.uid("fetch", uid.decode(), "(BODY.PEEK[])")
                out.extend(bytes(x) for x in fetched.lines if isinstance(x, bytearray))
    finally:
        with contextlib.suppress(Exception):
            await close_imap(imap)
    return out


async def positive_control(world: World, text: str, timeout: float = 20.0) -> None:
    """A good mail from Alice; return once Carol (Matrix) and Bob (mail) have it, each
    within ``timeout`` seconds (a ceiling: longer where the bot has a backlog to work off)."""
    await world.mail["alice"].send(world.list_address, world.list_fpr, "control", text)
    await world.mx["carol"].wait_for_event(lambda e: text in e.body, timeout=timeout)
    await world.mail["bob"].wait_for_mail(lambda m: text in m.text, timeout=timeout)


async def assert_not_relayed(world: World, marker: str) -> None:
    assert not [e for e in world.mx["carol"].events if marker in e.body]
    for key in ("alice", "bob"):
        assert not [m for m in world.mail[key].seen if marker in m.text]


async def wait_notice(world: World, *needles: str) -> str:
    def find() -> SeenEvent | None:
        return next(
            (
                n
                for n in world.admin.events  # type: ignore[union-attr]
                if n.room_id == world.control_room
                and all(x in n.body for x in needles)
                and n.sender == world.config.matrix.user_id
            ),
            None,
        )  # type: ignore[union-attr]

    found = await wait_until(find, 20, f"a control-room notice with {needles}")
    return found.body  # type: ignore[attr-defined,no-any-return]


async def _rejected(
    world: World, send: Callable[[], object], marker: str, reason: str, explained_to: str | None
) -> None:
    await send()  # type: ignore[misc]
    body = await wait_notice(world, "Mail rejected", reason)
    assert marker not in body  # the decrypted body never goes to the control room
    if explained_to:
        answer = await world.mail[explained_to].wait_for_mail(
            lambda m: "was not relayed" in m.text, what="the explanation"
        )
        assert answer.signer == world.list_fpr
        assert reason in answer.text
        assert answer.headers["Auto-Submitted"] == "auto-replied"
    await positive_control(world, f"all clear after {marker[::-1]}")
    await assert_not_relayed(world, marker)
    if explained_to is None:  # F4: no answer to an address that a signature did not prove
        for key in ("alice", "bob"):
            assert not [m for m in world.mail[key].seen if "was not relayed" in m.text]
    quarantined = await folder_messages(world, "secir-quarantine")
    assert len(quarantined) == 1
    assert world.app is not None and not world.app_task.done()  # type: ignore[union-attr]


async def test_unencrypted_mail_is_rejected(world: World) -> None:
    marker = "UNENCRYPTED-7731"
    bob = world.mail["bob"]
    await _rejected(
        world,
        lambda: bob.send(world.list_address, None, "hi", marker, fmt="plain"),
        marker,
        "not encrypted",
        explained_to=None,  # nothing proves who sent it: no answer (F4)
    )


async def test_unsigned_mail_is_rejected(world: World) -> None:
    marker = "UNSIGNED-1290"
    bob = world.mail["bob"]
    await _rejected(
        world,
        lambda: bob.send(world.list_address, world.list_fpr, "hi", marker, fmt="pgp-mime-nosig"),
        marker,
        "not signed",
        explained_to=None,
    )


async def test_signer_not_a_member_is_rejected(world: World) -> None:
    marker = "OUTSIDER-5521"
    # Bob's mailbox, but a key the list has never seen: the signing key decides.
    import tempfile
    from pathlib import Path

    from secir_bot.crypto import Keyring

    home = Path(tempfile.mkdtemp(prefix="gx"))
    ring = Keyring.create(home)
    try:
        fpr = await ring.generate("Dave Outsider", "dave@test.example")
        await ring.import_key(
            await world.keyrings["bob"].export_public(
                (await world.keyrings["bob"].keys())[0].fingerprint
            )
        )
        bob = world.mail["bob"]
        list_pub = await world.keyrings["alice"].export_public(world.list_fpr)
        await ring.import_key(list_pub)
        await _rejected(
            world,
            lambda: bob.send(
                world.list_address,
                world.list_fpr,
                "hi",
                marker,
                signing_keyring=ring,
                signing_fpr=fpr,
            ),
            marker,
            "signature does not verify",
            explained_to=None,
        )
    finally:
        ring.close()


async def test_from_of_another_member_is_rejected(world: World) -> None:
    marker = "SPOOFED-FROM-8830"
    alice, bob = world.mail["alice"], world.mail["bob"]
    # Alice signs with her own key but claims to be Bob: Alice, the signer, is answered.
    _, data = await alice.compose(world.list_address, world.list_fpr, "hi", marker)
    data = data.replace(
        f"From: {alice.name} <{alice.address}>".encode(),
        f"From: {bob.name} <{bob.address}>".encode(),
        1,
    )
    await _rejected(
        world,
        lambda: alice.send_raw(world.list_address, data),
        marker,
        "belongs to another member",
        explained_to="alice",
    )


async def test_unparseable_mail_is_rejected(world: World) -> None:
    marker = "BROKEN-4410"
    bob = world.mail["bob"]
    data = (
        f"From: Bob <{bob.address}>\r\nTo: {world.list_address}\r\nSubject: {marker}\r\n"
        "Message-ID: <broken-4410@test.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        'boundary="b"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\n'
        "Version: 1\r\n--b--\r\n"
    ).encode()
    await _rejected(
        world,
        lambda: bob.send_raw(world.list_address, data),
        "BROKEN-4410",
        "unreadable mail",
        explained_to=None,
    )


async def test_loops_auto_replies_and_bounces_are_dropped_silently(world: World) -> None:
    alice, bob = world.mail["alice"], world.mail["bob"]
    await world.mx["alice"].send(world.incident_room, "LOOPCHECK-1 list mail")
    copy = await bob.wait_for_mail(lambda m: "LOOPCHECK-1" in m.text)
    # Bob's client sends the list's mail straight back to the list.
    await bob.send_raw(world.list_address, copy.raw)
    # An out-of-office answer, even properly signed and encrypted, is never redistributed.
    await bob.send(
        world.list_address,
        world.list_fpr,
        "Out of office",
        "OOO-2231 back Monday",
        headers={"Auto-Submitted": "auto-replied"},
    )
    bounce = (
        f"From: MAILER-DAEMON@test.example\r\nTo: {world.list_address}\r\n"
        "Subject: Undelivered Mail\r\nMessage-ID: <bounce-1@test.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
        'report-type=delivery-status; boundary="r"\r\n\r\n--r\r\n'
        "Content-Type: text/plain\r\n\r\nBOUNCE-9912\r\n--r--\r\n"
    ).encode()
    await alice.send_raw(world.list_address, bounce)
    await positive_control(world, "all clear after loops")
    await assert_not_relayed(world, "OOO-2231")
    await assert_not_relayed(world, "BOUNCE-9912")
    # The looped copy was not relayed a second time, and nobody got an explanation.
    carol_copies = [e for e in world.mx["carol"].events if "LOOPCHECK-1" in e.body]
    assert len(carol_copies) == 1
    assert not [m for m in bob.seen if "was not relayed" in m.text]
    assert not [n for n in await notices(world) if "Mail rejected" in n]
    processed = await folder_messages(world, "secir-processed")
    assert any(b"BOUNCE-9912" in p for p in processed)


async def test_replayed_signed_mail_is_rejected(world: World) -> None:
    bob = world.mail["bob"]
    msgid, data = await bob.compose(world.list_address, world.list_fpr, "s", "REPLAY-6060 once")
    await bob.send_raw(world.list_address, data)
    await world.mx["carol"].wait_for_event(lambda e: "REPLAY-6060" in e.body)
    # Someone who captured it sends the same signed ciphertext again, as a "new" mail.
    replay = data.replace(msgid.encode(), b"<replayed-6060@attacker.test>").replace(
        b"Subject: ...", b"Subject: URGENT: move your NS now", 1
    )
    await bob.send_raw(world.list_address, replay)
    await wait_notice(world, "Mail rejected", "received before")
    await positive_control(world, "all clear after the replay")
    assert len([e for e in world.mx["carol"].events if "REPLAY-6060" in e.body]) == 1
    alice = world.mail["alice"]
    await alice.wait_for_mail(lambda m: "REPLAY-6060" in m.text)  # reads her whole mailbox
    assert len([m for m in alice.seen if "REPLAY-6060" in m.text]) == 1


async def test_f4_answers_go_to_verified_signers_and_quote_nothing_they_chose(
    world: World,
) -> None:
    alice, bob = world.mail["alice"], world.mail["bob"]
    # A forged From gets nothing: the list never signs an answer to an unproven address.
    forged = (
        f"From: {bob.name} <{bob.address}>\r\nTo: {world.list_address}\r\n"
        "Subject: F4\r\nMessage-ID: <F4-FORGED-QUOTE@attacker.test>\r\n\r\nF4-FORGED\r\n"
    ).encode()
    await alice.send_raw(world.list_address, forged)
    await wait_notice(world, "Mail rejected", "not encrypted")
    # Alice's own signed mail, refused (no text), under a Message-ID she chose.
    _, data = await alice.compose(world.list_address, world.list_fpr, "empty", "")
    data = re.sub(rb"Message-ID: <[^>]+>", b"Message-ID: <F4-SENDER-CHOSEN@nic.test>", data)
    await alice.send_raw(world.list_address, data)
    answer = await alice.wait_for_mail(lambda m: "was not relayed" in m.text)
    assert answer.signer == world.list_fpr
    assert "F4-SENDER-CHOSEN" not in answer.text and "F4-SENDER-CHOSEN" not in str(
        list(answer.headers.items())
    )
    assert "the list's item" in answer.text and answer.headers["In-Reply-To"] is None
    await positive_control(world, "all clear after F4")
    assert not [m for m in bob.seen if "was not relayed" in m.text]
