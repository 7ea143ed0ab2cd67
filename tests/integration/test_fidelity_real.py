"""Message fidelity against the real servers (issue 10), before the wiring.

Matrix: a member's nio client uploads a file encrypted by ``bridges/matrix/media.py`` to a
real Synapse and posts the event it builds into an encrypted room; another member's nio
client decrypts the event, downloads the file and gets it back byte for byte, and a file
the server swapped is refused. Edits and relayed text built by the helpers go through the
same room.

Mail: the list's PGP/MIME mail with files inside the one signed+encrypted body goes
through Postfix to Dovecot; the member reads it over IMAP, decrypts it with their own key
and gets every file back byte for byte.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from nio import RoomEncryptedMedia, RoomSendError, UploadResponse
from servers import MailStack, password_for

from secir_bot.bridges.matrix.media import (
    MediaRef,
    decrypt_media,
    encrypt_media,
    media_content,
    parse_media,
)
from secir_bot.crypto import Keyring
from secir_bot.fidelity.attachments import walk
from secir_bot.fidelity.fit import fit_matrix_text
from secir_bot.fidelity.fromtext import text_to_matrix
from secir_bot.fidelity.mailparts import OutgoingFile, mail_body
from secir_bot.fidelity.reasons import Refusal
from secir_bot.fidelity.relations import edit_content, parse_edit
from secir_bot.mime.compose import ListHeaders, compose_outer
from secir_bot.sandbox.operators import MailOperator, MatrixOperator, wait_until
from secir_bot.sandbox.synapse import Synapse

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000400000002008060000") + os.urandom(2000)
LOG = b"".join(
    f"2025-03-04T09:{i % 60:02d}:00Z resolver 198.51.100.{i % 250} SERVFAIL\n".encode()
    for i in range(3000)
)


class Member:
    """A nio member that also records the media events it decrypts."""

    def __init__(self, op: MatrixOperator) -> None:
        self.op = op
        self.media: list[dict[str, Any]] = []

        async def on_media(room: Any, event: RoomEncryptedMedia) -> None:
            self.media.append(event.source)

        op.client.add_event_callback(on_media, RoomEncryptedMedia)


@pytest_asyncio.fixture
async def room(synapse: Synapse) -> AsyncIterator[tuple[Member, Member, str]]:
    tag = secrets.token_hex(3)
    directory = Path(tempfile.mkdtemp(prefix="fm"))
    ops = []
    try:
        for name in ("alice", "bob"):
            reg = synapse.register(f"{name}-{tag}", f"pw-{name}")
            op = MatrixOperator(
                synapse.url,
                reg["user_id"],
                reg["device_id"],
                reg["access_token"],
                directory / name,
            )
            await op.start()
            ops.append(op)
        alice, bob = ops
        room_id = await alice.create_room(f"fidelity-{tag}", [bob.user_id])
        await alice.wait_joined(room_id, [bob.user_id])
        await alice.know_devices_of(bob.user_id)
        yield Member(alice), Member(bob), room_id
    finally:
        for op in ops:
            await op.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def upload(member: Member, ciphertext: bytes) -> str:
    resp, _ = await member.op.client.upload(
        lambda *_: ciphertext,
        content_type="application/octet-stream",
        filesize=len(ciphertext),
    )
    assert isinstance(resp, UploadResponse), resp
    return str(resp.content_uri)


async def post(member: Member, room_id: str, content: dict[str, Any]) -> str:
    resp = await member.op.client.room_send(
        room_id, "m.room.message", content, ignore_unverified_devices=True
    )
    event_id = getattr(resp, "event_id", None)
    assert event_id, resp
    return str(event_id)


async def download(member: Member, mxc: str) -> bytes:
    resp = await member.op.client.download(mxc)
    body = getattr(resp, "body", None)
    assert isinstance(body, bytes), resp
    return body


async def received_media(member: Member, event_id: str) -> dict[str, Any]:
    return await wait_until(
        lambda: next((e for e in member.media if e.get("event_id") == event_id), None),
        20,
        f"media event {event_id}",
    )


async def test_issue10_encrypted_file_through_synapse_byte_for_byte(
    room: tuple[Member, Member, str],
) -> None:
    alice, bob, room_id = room
    files = [("traffic.png", "image/png", PNG), ("resolver.log", "text/plain", LOG)]
    sent = []
    for filename, ctype, data in files:
        media = encrypt_media(data)
        mxc = await upload(alice, media.ciphertext)
        caption = (
            text_to_matrix("Traffic at 09:00, see https://status.test/1")
            if ctype.startswith("image/")
            else None
        )
        content = media_content(
            filename=filename, content_type=ctype, data=data, file=media.file(mxc), caption=caption
        )
        sent.append((await post(alice, room_id, content), filename, data))
    for event_id, filename, data in sent:
        event = await received_media(bob, event_id)
        assert event["type"] == "m.room.message"  # decrypted from m.room.encrypted
        ref = parse_media(event["content"])
        assert isinstance(ref, MediaRef) and ref.filename == filename
        assert ref.declared_size == len(data)
        ciphertext = await download(bob, ref.url)
        assert ciphertext != data  # the server holds only ciphertext
        plain = decrypt_media(ciphertext, ref.file, ref.filename)
        assert isinstance(plain, bytes)
        assert hashlib.sha256(plain).digest() == hashlib.sha256(data).digest()
    image = await received_media(bob, sent[0][0])
    assert image["content"]["msgtype"] == "m.image"
    assert image["content"]["info"]["w"] == 64 and image["content"]["info"]["h"] == 32
    assert image["content"]["body"] == "Traffic at 09:00, see https://status.test/1"
    assert image["content"]["m.mentions"] == {}


async def test_issue10_file_swapped_on_the_server_is_refused(
    room: tuple[Member, Member, str],
) -> None:
    alice, bob, room_id = room
    media = encrypt_media(b"the real file")
    # The homeserver (or anyone who can write to it) serves other bytes under the URL.
    other = encrypt_media(b"the real file").ciphertext
    swapped = await upload(alice, other)
    content = media_content(
        filename="real.txt",
        content_type="text/plain",
        data=b"the real file",
        file=media.file(swapped),
    )
    event_id = await post(alice, room_id, content)
    ref = parse_media((await received_media(bob, event_id))["content"])
    assert isinstance(ref, MediaRef)
    assert decrypt_media(await download(bob, ref.url), ref.file, ref.filename) == Refusal(
        "media-hash-mismatch", {"name": "real.txt"}
    )


async def test_relayed_text_and_an_edit_through_synapse(room: tuple[Member, Member, str]) -> None:
    alice, bob, room_id = room
    relayed = text_to_matrix("First version.\n\n> quoted\n").content()
    original = await post(alice, room_id, relayed)
    new = text_to_matrix("Corrected version.").content()
    edit = await post(alice, room_id, edit_content(original, new))
    seen = await bob.op.wait_for_event(lambda e: e.event_id == edit)
    assert seen.decrypted
    parsed = parse_edit(seen.content)
    assert parsed is not None and parsed.replaces == original
    assert parsed.new_content["formatted_body"] == "<p>Corrected version.</p>"
    assert seen.content["m.mentions"] == {}
    first = await bob.op.wait_for_event(lambda e: e.event_id == original)
    assert first.content["formatted_body"] == (
        "<p>First version.</p><details><summary>Quoted text (1 line)</summary>"
        "<blockquote><p>quoted</p></blockquote></details>"
    )


# -- mail --------------------------------------------------------------------------------------

LIST = ListHeaders(
    name="SECIR",
    address="list@test.example",
    list_id="secir.test.example",
    owner="owner@test.example",
    tag="SECIR",
)


@pytest_asyncio.fixture
async def mail_member(mail_stack: MailStack) -> AsyncIterator[tuple[Keyring, str, MailOperator]]:
    homes = [Path(tempfile.mkdtemp(prefix="gf")) for _ in range(2)]
    rings = [Keyring.create(home) for home in homes]
    try:
        list_ring, alice_ring = rings
        list_fpr = await list_ring.generate("SECIR", LIST.address)
        alice_fpr = await alice_ring.generate("Alice", "alice@test.example")
        await list_ring.import_key(await alice_ring.export_public(alice_fpr))
        await alice_ring.import_key(await list_ring.export_public(list_fpr))
        alice = MailOperator(
            address="alice@test.example",
            name="Alice",
            keyring=alice_ring,
            fingerprint=alice_fpr,
            password=password_for("alice@test.example"),
            smtp_port=mail_stack.smtp_port,
            imap_port=mail_stack.imap_port,
        )
        yield list_ring, list_fpr, alice
    finally:
        for ring in rings:
            ring.close()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


async def test_issue10_files_by_mail_through_postfix_and_dovecot(
    mail_member: tuple[Keyring, str, MailOperator],
) -> None:
    list_ring, list_fpr, alice = mail_member
    tag = secrets.token_hex(4)
    files = [
        OutgoingFile("traffic.png", "image/png", PNG),
        OutgoingFile("resolver.log", "text/plain", LOG),
        OutgoingFile("capture.pcap", "application/vnd.tcpdump.pcap", os.urandom(200_000)),
        OutgoingFile("Übersicht Zöne.csv", "text/csv", "tld;état\n.fr;ok\n".encode()),
    ]
    message_id = f"<fidelity-{tag}@test.example>"
    inner = (
        f"From: SECIR <{LIST.address}>\r\nTo: {LIST.address}\r\n"
        f"Subject: files {tag}\r\nMessage-ID: {message_id}\r\n"
    ).encode() + mail_body(f"Files {tag} attached.", files=files).as_bytes()
    armored = await list_ring.sign_encrypt(inner, [alice.fingerprint], list_fpr)
    raw = compose_outer(
        armored=armored, from_label=None, lists=LIST, message_id=message_id, to=LIST.address
    )
    await alice.send_raw(alice.address, raw)
    mail = await alice.wait_for_mail(lambda m: f"files {tag}" == m.subject, what="the files")
    assert mail.decrypted and mail.signer == list_fpr
    parts = walk(email.message_from_bytes(mail.plaintext, policy=email.policy.compat32))
    assert [(a.filename, a.data) for a in parts.attachments] == [
        (f.filename, f.data) for f in files
    ]
    assert parts.text is not None and parts.text.text == f"Files {tag} attached."


async def test_issue10_long_mail_is_cut_to_what_synapse_accepts(
    room: tuple[Member, Member, str],
) -> None:
    """Unfitted, a long Cyrillic mail is refused by the homeserver (M_TOO_LARGE: nothing
    would reach the room); fitted, it arrives, cut at a line end, saying so."""
    alice, bob, room_id = room
    text = "".join(f"Строка {i}: атака на резолверы .рф продолжается.\n" for i in range(400))
    refused = await alice.op.client.room_send(
        room_id, "m.room.message", text_to_matrix(text).content(), ignore_unverified_devices=True
    )
    assert isinstance(refused, RoomSendError) and refused.status_code == "M_TOO_LARGE"
    fitted, cut = fit_matrix_text(text, text_to_matrix)
    assert cut
    event_id = await post(alice, room_id, fitted.content())
    seen = await bob.op.wait_for_event(lambda e: e.event_id == event_id)
    assert seen.decrypted and seen.body.endswith("the whole text went out by mail]")
    assert text.startswith(seen.body.split("\n\n[…")[0])
