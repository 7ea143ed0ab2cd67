"""The test servers themselves: each fixture really serves, and really refuses.

These run first when something in the environment is broken (a missing Debian package, a
socket path too long, a Synapse that will not start), so their failures name the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import aiosmtplib
import gnupg
import pytest
from nio import AsyncClient, AsyncClientConfig, KeysUploadResponse, SyncResponse
from servers import GpgWorld, MailStack, password_for

from secir_bot.sandbox import SandboxError
from secir_bot.sandbox.mailserver import SandboxMail
from secir_bot.sandbox.scratch import RAM, ram_has_room
from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.whois import WhoisResponder, iana_records

DEADLINE = 5.0


def _message(sender: str, rcpt: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@test.example>"
    msg.set_content("Hello from the server tests.\n")
    return msg


async def _imap(port: int, user: str, password: str) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=DEADLINE)
    await client.wait_hello_from_server()
    response = await client.login(user, password)
    if response.result != "OK":
        await client.logout()
        raise AssertionError(f"IMAP login as {user} failed: {response}")
    return client


async def _wait_for_subject(client: aioimaplib.IMAP4, subject: str) -> bytes:
    """Poll INBOX until a message with ``subject`` is there; return its raw bytes."""
    assert (await client.select("INBOX")).result == "OK"
    deadline = time.monotonic() + DEADLINE
    while True:
        found = await client.uid_search(f'HEADER Subject "{subject}"')
        assert found.result == "OK", found
        uids = found.lines[0].split()
        if uids:
            fetched = await client.uid("fetch", uids[0].decode(), "(BODY.PEEK[])")
            assert fetched.result == "OK", fetched
            return bytes(fetched.lines[1])
        assert time.monotonic() < deadline, f"no message {subject!r} within {DEADLINE} s"
        await asyncio.sleep(0.05)


# Postfix + Dovecot


async def test_postfix_delivers_to_dovecot(mail_stack: MailStack) -> None:
    subject = f"stack {uuid.uuid4().hex}"
    msg = _message("alice@test.example", "bob@test.example", subject)
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=mail_stack.smtp_port)

    client = await _imap(mail_stack.imap_port, "bob@test.example", password_for("bob"))
    try:
        raw = await _wait_for_subject(client, subject)
    finally:
        await client.logout()
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert received["Message-ID"] == msg["Message-ID"], mail_stack.logs()
    assert received["Delivered-To"] == "bob@test.example"
    assert received["Return-Path"] == "<alice@test.example>"


async def test_postfix_refuses_other_domains(mail_stack: MailStack) -> None:
    msg = _message("alice@test.example", "someone@example.org", "nowhere")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=mail_stack.smtp_port)
    assert refused.value.recipients[0].code == 550


async def test_unknown_local_user_bounces_to_sender(mail_stack: MailStack) -> None:
    subject = f"to nobody {uuid.uuid4().hex}"
    msg = _message("carol@test.example", "nobody@test.example", subject)
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=mail_stack.smtp_port)

    client = await _imap(mail_stack.imap_port, "carol@test.example", password_for("carol"))
    try:
        raw = await _wait_for_subject(client, "Undelivered Mail Returned to Sender")
    finally:
        await client.logout()
    bounce = email.message_from_bytes(raw, policy=email.policy.default)
    assert bounce.get_content_type() == "multipart/report"
    assert subject.encode() in raw


async def test_mail_stack_add_user_and_wrong_password(mail_stack: MailStack) -> None:
    mail_stack.add_user("erin@test.example", "pw-erin")
    client = await _imap(mail_stack.imap_port, "erin@test.example", "pw-erin")
    await client.logout()

    client = aioimaplib.IMAP4(host="127.0.0.1", port=mail_stack.imap_port, timeout=DEADLINE)
    await client.wait_hello_from_server()
    response = await client.login("erin@test.example", "wrong")
    assert response.result == "NO"
    await client.logout()


# Synapse + matrix-nio


async def test_synapse_user_logs_in_with_e2e(synapse: Synapse, tmp_path: Path) -> None:
    localpart = f"u{uuid.uuid4().hex[:12]}"
    account = await asyncio.to_thread(synapse.register, localpart, "secret")
    assert account["user_id"] == synapse.user_id(localpart)

    store = tmp_path / "nio-store"
    store.mkdir()
    client = AsyncClient(
        synapse.url,
        account["user_id"],
        device_id=account["device_id"],
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
    )
    try:
        client.restore_login(account["user_id"], account["device_id"], account["access_token"])
        # Without a usable store nio silently runs unencrypted; make sure it did not.
        assert client.olm is not None
        sync = await client.sync(timeout=0, full_state=True)
        assert isinstance(sync, SyncResponse), sync
        assert client.should_upload_keys
        upload = await client.keys_upload()
        assert isinstance(upload, KeysUploadResponse), upload
        assert upload.signed_curve25519_count > 0
    finally:
        await client.close()


def test_the_throwaway_synapse_keeps_its_database_in_memory(synapse: Synapse) -> None:
    """Where the machine has a tmpfs with room (this one has), so no commit waits for a disk."""
    if not ram_has_room():
        pytest.skip(f"{RAM} is missing, read-only or too small here")
    assert synapse.directory.is_relative_to(RAM.resolve())
    assert (synapse.directory / "homeserver.db").exists()


def test_the_sandbox_synapse_neither_receives_nor_sends_federation(synapse: Synapse) -> None:
    config = json.loads((synapse.directory / "homeserver.yaml").read_text())
    assert [r["names"] for r in config["listeners"][0]["resources"]] == [["client"]]
    assert config["federation_domain_whitelist"] == []
    assert config["federation_sender_instances"] == []  # no per-event work for it either


def test_synapse_refuses_a_taken_user_id(synapse: Synapse) -> None:
    localpart = f"u{uuid.uuid4().hex[:12]}"
    synapse.register(localpart, "secret")
    with pytest.raises(SandboxError, match="User ID already taken"):
        synapse.register(localpart, "other")


# GnuPG


def test_gpg_world_encrypts_between_homes(gpg_world: GpgWorld) -> None:
    alice_fpr = gpg_world.fingerprint("alice@test.example")
    bob_fpr = gpg_world.fingerprint("bob@test.example")
    alice = gnupg.GPG(gnupghome=str(gpg_world.make_home(["alice@test.example"])))
    assert alice.import_keys(gpg_world.export_public("bob@test.example")).fingerprints == [bob_fpr]

    sealed = alice.encrypt("for Bob only", [bob_fpr], sign=alice_fpr, always_trust=True)
    assert sealed.ok, sealed.stderr

    bob = gnupg.GPG(gnupghome=str(gpg_world.make_home(["bob@test.example"])))
    bob.import_keys(gpg_world.export_public("alice@test.example"))
    opened = bob.decrypt(str(sealed), always_trust=True)
    assert opened.ok, opened.stderr
    assert str(opened) == "for Bob only"
    assert opened.valid
    assert opened.fingerprint == alice_fpr

    mallory = gnupg.GPG(gnupghome=str(gpg_world.make_home(["mallory@test.example"])))
    assert not mallory.decrypt(str(sealed), always_trust=True).ok


def test_gpg_world_unusable_keys(gpg_world: GpgWorld) -> None:
    odd = ["expired@test.example", "revoked@test.example", "signonly@test.example"]
    keyring = gnupg.GPG(gnupghome=str(gpg_world.make_home(odd, secret=False)))
    assert keyring.list_keys(secret=True) == []
    listed = {key["fingerprint"]: key for key in keyring.list_keys()}
    expired, revoked, signonly = (listed[gpg_world.fingerprint(email)] for email in odd)
    assert expired["trust"] == "e"
    assert revoked["trust"] == "r"
    assert "e" not in signonly["cap"].lower()
    for email_address in odd:
        attempt = keyring.encrypt("x", [gpg_world.fingerprint(email_address)], always_trust=True)
        assert not attempt.ok, email_address


# In-process sandbox mail server


async def test_sandbox_mail_smtp_in_imap_out() -> None:
    mail = await SandboxMail.start({"bob@test.example": "pw-bob", "list@test.example": "pw-l"})
    try:
        subject = f"sandbox {uuid.uuid4().hex}"
        msg = _message("list@test.example", "bob@test.example", subject)
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=mail.smtp_port)

        client = await _imap(mail.imap_port, "bob@test.example", "pw-bob")
        try:
            raw = await _wait_for_subject(client, subject)
        finally:
            await client.logout()
        received = email.message_from_bytes(raw, policy=email.policy.default)
        assert received["Message-ID"] == msg["Message-ID"]
        assert received["Delivered-To"] == "bob@test.example"

        stray = _message("list@test.example", "carol@test.example", "who?")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await aiosmtplib.send(stray, hostname="127.0.0.1", port=mail.smtp_port)
        assert refused.value.recipients[0].code == 550

        client = aioimaplib.IMAP4(host="127.0.0.1", port=mail.imap_port, timeout=DEADLINE)
        await client.wait_hello_from_server()
        assert (await client.login("bob@test.example", "wrong")).result == "NO"
        await client.logout()
    finally:
        await mail.stop()


async def test_sandbox_mail_stop_ends_idle_sessions() -> None:
    mail = await SandboxMail.start({"bob@test.example": "pw-bob"})
    lost = asyncio.Event()
    client = aioimaplib.IMAP4(
        host="127.0.0.1", port=mail.imap_port, timeout=DEADLINE, conn_lost_cb=lambda _: lost.set()
    )
    await client.wait_hello_from_server()
    await client.login("bob@test.example", "pw-bob")
    await client.select("INBOX")
    idle = await client.idle_start(timeout=DEADLINE)

    await mail.deliver("bob@test.example", b"Subject: pushed\n\nhello\n")
    push = await client.wait_server_push(timeout=DEADLINE)
    assert b"1 EXISTS" in push

    await mail.stop()
    await asyncio.wait_for(lost.wait(), DEADLINE)
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle


async def _sandbox_server(side: str) -> tuple[int, Callable[[], Awaitable[None]]]:
    """A sandbox server's port, and its stop."""
    if side == "whois":
        whois = await WhoisResponder(iana_records("test.example")).start()
        return whois.port, whois.stop
    mail = await SandboxMail.start({"bob@test.example": "pw-bob"})
    return (mail.imap_port if side == "imap" else mail.smtp_port), mail.stop


@pytest.mark.parametrize("turns", range(7))
@pytest.mark.parametrize("side", ["imap", "smtp", "whois"])
async def test_a_sandbox_server_stop_ends_a_connection_it_is_still_accepting(
    side: str, turns: int
) -> None:
    """A client connects just as the server stops (the bot reconnecting while the sandbox
    ends). The kernel has accepted the connection; asyncio takes it and makes it over the
    next turns of the loop, and the stop comes after ``turns`` of them. Whatever the turn,
    the connection ends: it was neither served after the stop nor left open (on Python 3.11
    one made after its server closed was left half made, its socket open)."""
    port, stop = await _sandbox_server(side)
    sock = socket.create_connection(("127.0.0.1", port))  # accepted by the kernel at once
    try:
        for _ in range(turns):
            await asyncio.sleep(0)
        await stop()
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            async with asyncio.timeout(DEADLINE):
                # The greeting may have gone out first; then the end (or a reset, for a
                # connection the server never took).
                with contextlib.suppress(ConnectionResetError):
                    while await reader.read(4096):
                        pass
        finally:
            writer.close()
    finally:
        sock.close()
