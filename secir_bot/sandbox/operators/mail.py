"""The operator on email: a person with a mail account and their own OpenPGP key.

A ``MailOperator`` builds PGP/MIME or inline-PGP mail signed with its own key and encrypted
to the list key, sends it over SMTP, and reads the list's mail over IMAP, decrypting it with
its own key.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import aioimaplib
import aiosmtplib

from secir_bot import mime
from secir_bot.bridges.email import close_imap
from secir_bot.crypto import Keyring
from secir_bot.sandbox.operators.base import ReceivedMail


@dataclass
class MailOperator:
    """A list member (or outsider) on email, with their own key and mailbox."""

    address: str
    name: str
    keyring: Keyring
    fingerprint: str
    password: str
    smtp_port: int
    imap_port: int
    host: str = "127.0.0.1"
    seen: list[ReceivedMail] = field(default_factory=list)

    async def compose(
        self,
        to: str,
        list_fpr: str | None,
        subject: str,
        body: str,
        *,
        fmt: str = "pgp-mime",
        sign: bool = True,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        signing_keyring: Keyring | None = None,
        signing_fpr: str | None = None,
        inner_headers: dict[str, str | None] | None = None,
        attachments: tuple[tuple[str, str, bytes], ...] = (),
    ) -> tuple[str, bytes]:
        """Build a mail; return (Message-ID, bytes). ``fmt``: pgp-mime, inline, plain,
        signed-only, pgp-mime-nosig, pgp-mime-layered (sign then encrypt, RFC 3156 §6.1).

        PGP/MIME carries protected headers as Thunderbird writes them (Subject, From, To and
        the thread headers); ``inner_headers`` changes them (None removes one).
        ``attachments`` (file name, type, bytes) go inside the signed part, multipart/mixed,
        as Thunderbird attaches files (PGP/MIME only)."""
        msgid = make_msgid(domain=self.address.split("@")[1])
        ring = signing_keyring or self.keyring
        signer = signing_fpr or self.fingerprint
        outer = EmailMessage(policy=email.policy.SMTP)
        outer["From"] = f"{self.name} <{self.address}>"
        outer["To"] = to
        outer["Subject"] = "..." if fmt.startswith("pgp-mime") else subject
        outer["Message-ID"] = msgid
        outer["Date"] = format_datetime(datetime.now(UTC))
        if in_reply_to:
            outer["In-Reply-To"] = in_reply_to
        if references:
            outer["References"] = " ".join(references)
        for k, v in (headers or {}).items():
            outer[k] = v
        if fmt == "plain":
            outer.set_content(body)
            return msgid, outer.as_bytes()
        if fmt == "signed-only":
            outer.set_content(body)
            return msgid, outer.as_bytes()
        assert list_fpr is not None
        if fmt == "inline":
            armored = (
                await ring.sign_encrypt(body.encode(), [list_fpr], signer)
                if sign
                else await _encrypt_only(ring, body.encode(), list_fpr)
            )
            outer.set_content(armored.decode())
            return msgid, outer.as_bytes()
        inner = _protected(
            subject, str(outer["From"]), to, in_reply_to, references, body, inner_headers
        )
        for filename, content_type, blob in attachments:
            maintype, _, subtype = content_type.partition("/")
            inner.add_attachment(blob, maintype, subtype, filename=filename)
        data = inner.as_bytes()
        if fmt == "pgp-mime-layered":
            data = await _layered(ring, signer, inner)
            armored = await _encrypt_only(ring, data, list_fpr)
        elif sign and fmt != "pgp-mime-nosig":
            armored = await ring.sign_encrypt(data, [list_fpr], signer)
        else:
            armored = await _encrypt_only(ring, data, list_fpr)
        mime.make_pgp_mime(outer, armored)
        return msgid, outer.as_bytes()

    async def signed_entity(
        self, to: str, subject: str, body: str, inner_headers: dict[str, str | None] | None = None
    ) -> bytes:
        """The multipart/signed entity of a signed mail this operator sends to ``to``."""
        sender = f"{self.name} <{self.address}>"
        inner = _protected(subject, sender, to, None, (), body, inner_headers)
        return await _layered(self.keyring, self.fingerprint, inner)

    async def encrypted_mail(
        self, to: str, list_fpr: str, entity: bytes, *, sender: str, subject: str = "..."
    ) -> tuple[str, bytes]:
        """PGP/MIME around any ``entity``, encrypted (not signed) by this operator: what
        someone who captured another person's signed mail can send to the list."""
        msgid = make_msgid(domain=self.address.split("@")[1])
        outer = EmailMessage(policy=email.policy.SMTP)
        outer["From"] = sender
        outer["To"] = to
        outer["Subject"] = subject
        outer["Message-ID"] = msgid
        outer["Date"] = format_datetime(datetime.now(UTC))
        mime.make_pgp_mime(outer, await _encrypt_only(self.keyring, entity, list_fpr))
        return msgid, outer.as_bytes()

    async def clearsign(self, text: bytes) -> bytes:
        """A clear-signed copy of ``text`` made with this operator's key."""
        return await self.keyring.clearsign(text, self.fingerprint)

    async def inline_mail(
        self,
        to: str,
        list_fpr: str,
        plaintext: bytes,
        *,
        sign: bool = False,
        sender: str | None = None,
        subject: str = "...",
        message_id: str | None = None,
    ) -> tuple[str, bytes]:
        """Inline PGP around exactly ``plaintext``, encrypted to the list key (and signed
        with this operator's key when ``sign``): hostile tests choose every byte of what the
        list decrypts. ``sender`` replaces the From line."""
        msgid = message_id or make_msgid(domain=self.address.split("@")[1])
        armored = (
            await self.keyring.sign_encrypt(plaintext, [list_fpr], self.fingerprint)
            if sign
            else await _encrypt_only(self.keyring, plaintext, list_fpr)
        )
        outer = EmailMessage(policy=email.policy.SMTP)
        outer["From"] = sender or f"{self.name} <{self.address}>"
        outer["To"] = to
        outer["Subject"] = subject
        outer["Message-ID"] = msgid
        outer["Date"] = format_datetime(datetime.now(UTC))
        outer.set_content(armored.decode())
        return msgid, outer.as_bytes()

    async def send_raw(self, to: str, data: bytes) -> None:
        async with aiosmtplib.SMTP(
            hostname=self.host, port=self.smtp_port, start_tls=False
        ) as smtp:
            await smtp.sendmail(self.address, [to], data)

    async def send(
        self, to: str, list_fpr: str | None, subject: str, body: str, **kwargs: Any
    ) -> str:
        msgid, data = await self.compose(to, list_fpr, subject, body, **kwargs)
        await self.send_raw(to, data)
        return msgid

    async def fetch_all(self) -> list[bytes]:
        imap = aioimaplib.IMAP4(host=self.host, port=self.imap_port, timeout=10)
        out: list[bytes] = []
        try:  # closed on every way out: a refused login or a server going away too
            await imap.wait_hello_from_server()
            await imap.login(self.address, self.password)
            await imap.select("INBOX")
            resp = await imap.uid_search("ALL")
            for uid in bytes(resp.lines[0]).split():
                if not uid.isdigit():
                    continue
                fetched = await imap.uid("fetch", uid.decode(), "(BODY.PEEK[])")
                out.extend(bytes(x) for x in fetched.lines if isinstance(x, bytearray))
        finally:
            await close_imap(imap)
        return out

    async def read(self, raw: bytes) -> ReceivedMail:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        got = ReceivedMail(raw=raw, headers=msg)
        env = mime.parse_envelope(raw)
        if env.ciphertext is not None:
            result = await self.keyring.decrypt(env.ciphertext)
            if result.ok:
                content = mime.parse_decrypted(result.data, env.kind)
                got.text, got.subject = content.text, content.subject
                got.signer, got.decrypted = result.signer, True
                got.plaintext = result.data
        return got

    async def wait_for_mail(
        self, predicate: Callable[[ReceivedMail], bool], timeout: float = 20.0, what: str = "a mail"
    ) -> ReceivedMail:
        deadline = time.monotonic() + timeout
        known = {m.raw for m in self.seen}
        while True:
            for raw in await self.fetch_all():
                if raw in known:
                    continue
                known.add(raw)
                self.seen.append(await self.read(raw))
            for mail in self.seen:
                if predicate(mail):
                    return mail
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.address} waited {timeout}s for {what}; has "
                    f"{[(m.subject, m.text[:60]) for m in self.seen]}"
                )
            await asyncio.sleep(0.1)


def _protected(
    subject: str,
    sender: str,
    to: str,
    in_reply_to: str | None,
    references: tuple[str, ...],
    body: str,
    changes: dict[str, str | None] | None,
) -> EmailMessage:
    """The entity that gets signed and encrypted, with its protected headers."""
    inner = EmailMessage(policy=email.policy.SMTP)
    inner["Subject"] = subject
    inner["From"] = sender
    inner["To"] = to
    if in_reply_to:
        inner["In-Reply-To"] = in_reply_to
    if references:
        inner["References"] = " ".join(references)
    for name, value in (changes or {}).items():
        del inner[name]
        if value is not None:
            inner[name] = value
    inner.set_content(body)
    inner.set_param("protected-headers", "v1")
    return inner


async def _encrypt_only(ring: Keyring, data: bytes, fpr: str) -> bytes:
    return await ring.encrypt(data, [fpr])


async def _layered(ring: Keyring, signer: str, inner: EmailMessage) -> bytes:
    """multipart/signed around ``inner`` (to be encrypted afterwards)."""
    signed_part = inner.as_bytes(policy=email.policy.SMTP)
    sig = await ring.detach_sign(signed_part, signer)
    boundary = "sig-" + make_msgid().strip("<>").replace("@", "-")
    return (
        b"Content-Type: multipart/signed; micalg=pgp-sha256;\r\n"
        b' protocol="application/pgp-signature"; boundary="' + boundary.encode() + b'"\r\n\r\n'
        b"--"
        + boundary.encode()
        + b"\r\n"
        + signed_part
        + b"\r\n--"
        + boundary.encode()
        + b"\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n"
        + sig
        + b"\r\n--"
        + boundary.encode()
        + b"--\r\n"
    )
