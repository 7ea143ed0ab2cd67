"""Issue 9, the subscription procedure (D2) by mail, through Postfix, Dovecot, gpg and whois.

The admin's ``!invite .nl`` is given to the running bot's dispatcher directly (the control
room front end is another change); everything after it is real: the sandbox whois responder
names IANA's administrative contact, the executor mails it the code, the contact answers by
plain mail to the request address, each nominee gets a challenge encrypted to their key and
answers it with a signed mail, ``!approve`` subscribes them, and a new member posts to the
list and receives its mail.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest_asyncio
from commands_support import ADMIN, invocation
from servers import MailStack
from test_rejections import wait_notice
from worlds import world_on

from secir_bot import config as config_mod
from secir_bot import mime
from secir_bot.cases import CHALLENGE_PATTERN, CODE_PATTERN, CaseState
from secir_bot.commands import Reply
from secir_bot.crypto import Keyring
from secir_bot.mailfront import MailFront
from secir_bot.sandbox.operators import MailOperator, ReceivedMail, wait_until
from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.whois import WhoisResponder, iana_records
from secir_bot.sandbox.world import World


def contact_of(world: World) -> str:
    """IANA's administrative contact of .nl in this world's whois records (one mailbox per
    world: the mail server outlives a test)."""
    return f"admin-nl-{world.tag}@test.example"


@dataclass
class D2:
    world: World
    whois: WhoisResponder
    contact: MailOperator  # the administrative contact: a mailbox, no key the list knows
    boss: MailOperator  # a personal address of the contact's organisation
    nominees: dict[str, MailOperator]

    @property
    def request(self) -> str:
        return self.world.list_address.replace("@", "+request@")

    async def admin(self, line: str) -> Reply:
        """An admin's command, through the running bot's dispatcher (and its executor)."""
        app = self.world.app
        assert app is not None and isinstance(app.decider.requests, MailFront)
        reply = await app.decider.requests.dispatcher.handle(invocation(line, ADMIN))
        # What the inbox runner does after deciding a control-room message.
        app.executor.wake()
        app.cases.wake()
        return reply

    async def plain(self, sender: MailOperator, text: str, cc: str = "") -> str:
        """A plain (unsigned, unencrypted) mail to the request address, as a contact sends."""
        msgid = make_msgid(domain="test.example")
        lines = [
            f"From: {sender.name} <{sender.address}>",
            f"To: {self.request}",
            *([f"Cc: {cc}"] if cc else []),
            "Subject: Re: please nominate your incident contacts",
            f"Message-ID: {msgid}",
            f"Date: {format_datetime(datetime.now(UTC))}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            text,
        ]
        await sender.send_raw(self.request, "\r\n".join(lines).encode())
        return msgid

    def case(self) -> object:
        app = self.world.app
        assert app is not None
        return app.store.cases.open_for("nl")


async def _operator(world: World, address: str, name: str, home: Path, key: bool) -> MailOperator:
    await world._mail_user(address, "pw-" + address.split("@")[0])
    ring = Keyring.create(home)
    fpr = await ring.generate(name, address) if key else ""
    if key:
        await ring.import_key(await world.keyrings["alice"].export_public(world.list_fpr))
    return MailOperator(
        address=address,
        name=name,
        keyring=ring,
        fingerprint=fpr,
        password="pw-" + address.split("@")[0],
        smtp_port=world.smtp_port,
        imap_port=world.imap_port,
    )


@contextlib.asynccontextmanager
async def d2_world(synapse: Synapse, mail_stack: MailStack, extra: str = "") -> AsyncIterator[D2]:
    """A world with the D2 people, the whois responder in its config (plus ``extra``)."""
    directory = Path(tempfile.mkdtemp(prefix="w"))
    homes: list[Path] = []
    world = world_on(synapse, mail_stack, directory)
    records = {
        tld: text.replace("@test.example", f"-{world.tag}@test.example")
        for tld, text in iana_records("test.example").items()
    }
    responder = await WhoisResponder(records).start()
    rings: list[Keyring] = []
    try:
        await world.setup()
        assert world.config_path is not None
        with world.config_path.open("a") as f:
            f.write(f'\n[whois]\nhost = "127.0.0.1"\nport = {responder.port}\ntimeout = 1\n')
            f.write(extra)
        world.config = config_mod.load(world.config_path)
        people = {}
        for key, address, name, has_key in (
            ("contact", contact_of(world), "Admin Contact", False),
            ("boss", f"boss-{world.tag}@test.example", "Registry Boss", False),
            ("nina", f"nina-{world.tag}@test.example", "Nina de Vries", True),
            ("piet", f"piet-{world.tag}@test.example", "Piet Bakker", True),
        ):
            home = Path(tempfile.mkdtemp(prefix="gn"))
            homes.append(home)
            people[key] = await _operator(world, address, name, home, has_key)
            rings.append(people[key].keyring)
        await world.start_bot()
        yield D2(
            world,
            responder,
            people["contact"],
            people["boss"],
            {"nina": people["nina"], "piet": people["piet"]},
        )
    finally:
        await world.close()
        await responder.stop()
        for ring in rings:
            with contextlib.suppress(Exception):
                ring.close()
        for home in [directory, *homes]:
            shutil.rmtree(home, ignore_errors=True)


@pytest_asyncio.fixture
async def d2(synapse: Synapse, mail_stack: MailStack) -> AsyncIterator[D2]:
    async with d2_world(synapse, mail_stack) as world:
        yield world


def _subject(mail: ReceivedMail) -> str:
    """The (protected, when encrypted) subject."""
    return mail.subject or str(mail.headers["Subject"])


def _text(mail: ReceivedMail) -> str:
    """A signed-only mail's text (the operator decrypts only encrypted ones)."""
    return mail.text or mime.parse_decrypted(mail.raw).text


async def _invitation(d2: D2) -> tuple[ReceivedMail, str]:
    mail = await d2.contact.wait_for_mail(
        lambda m: "please nominate" in _subject(m) or "code:" in _text(m),
        what="the invitation",
    )
    found = CODE_PATTERN.search(_text(mail))
    assert found is not None
    return mail, found.group(0)


async def _nominee_block(op: MailOperator, phone: str = "+31 70 123 4567") -> str:
    key = await op.keyring.export_public(op.fingerprint)
    return f"name: {op.name}\nemail: {op.address}\nphone: {phone}\n{key}\n"


async def _contact_answer(d2: D2, sender: MailOperator, needle: str) -> str:
    mail = await sender.wait_for_mail(
        lambda m: "your nomination" in _subject(m) and needle in _text(m),
        what="the answer",
    )
    return _text(mail)


async def test_d2_by_mail_from_invite_to_a_new_member_posting(d2: D2) -> None:
    world = d2.world
    # whois answering garbage: a precise refusal, nothing sent, no case.
    d2.whois.mode = "garbage"
    refused = await d2.admin("!invite .nl")
    assert not refused.ok and "whois" in refused.text and d2.case() is None
    d2.whois.mode = "slow"  # never answers: refused after whois.timeout (1 s here)
    refused = await d2.admin("!invite .nl")
    assert not refused.ok and "whois" in refused.text and d2.case() is None
    d2.whois.mode = "ok"

    opened = await d2.admin("!invite .nl")
    assert opened.ok, opened.text
    invitation, code = await _invitation(d2)
    assert invitation.headers["Reply-To"] is None or d2.request in str(
        invitation.headers["Reply-To"]
    )
    # A stranger's mail with a wrong code: the admins hear of it, nobody is answered.
    await d2.plain(
        d2.boss, "code: AAAAA-BBBBB-CCCCC-DDDDD\n\n" + await _nominee_block(d2.nominees["nina"])
    )
    await wait_notice(world, "nomination", "this code is not known")
    # The right code from a personal address WITHOUT the contact in Cc: refused, answered to
    # the contact (the case's address), not to the sender.
    blocks = await _nominee_block(d2.nominees["nina"]) + await _nominee_block(d2.nominees["piet"])
    await d2.plain(d2.boss, f"Hello,\n\ncode: {code}\n\n{blocks}")
    contact = d2.contact.address
    await _contact_answer(d2, d2.contact, f"must come from {contact}, or have it in Cc")
    # Malformed fields and too many nominees: every problem at once, nothing changes.
    extra = (
        "name: Third Person\nemail: third@test.example\nfingerprint: 12\n\n"
        "name: Fourth Person\nemail: fourth@test.example\nfingerprint: 34\n"
    )
    bad = (
        await _nominee_block(d2.nominees["nina"], phone="call me")
        + await _nominee_block(d2.nominees["piet"])
        + extra
    )
    await d2.plain(d2.contact, f"code: {code}\n\n{bad}")
    notice = await wait_notice(world, "nomination", "at most 3 per ccTLD")
    assert "nominee 1, phone" in notice and "nominee 3, fingerprint" in notice
    answer = await _contact_answer(d2, d2.contact, "at most 3")
    assert "nominee 1, phone" in answer
    case = d2.case()
    assert case is not None and getattr(case, "state", None) is CaseState.INVITED

    # The good nomination, from the boss with the contact in Cc.
    await d2.plain(d2.boss, f"Dear list,\n\ncode: {code}\n\n{blocks}\n-- \nBoss", cc=contact)
    await wait_notice(world, "nominated", "Nina de Vries")
    # The same code again: spent.
    await d2.plain(d2.contact, f"code: {code}\n\n{blocks}")
    await wait_notice(world, "nomination", "already used")

    # Each nominee gets a challenge encrypted to their key.
    nina, piet = d2.nominees["nina"], d2.nominees["piet"]
    challenges = {}
    for op in (nina, piet):
        mail = await op.wait_for_mail(lambda m: "SECIR-PROOF-" in m.text, what="the challenge")
        assert mail.decrypted and mail.signer == world.list_fpr
        # Answering it goes to the request address, whichever headers the client reads.
        assert mail.headers["Reply-To"] == d2.request
        found = CHALLENGE_PATTERN.search(mail.text)
        assert found is not None
        challenges[op.address] = found.group(0)
    # Piet's challenge answered with Nina's signature: refused, Piet's key told, no change.
    await nina.send(
        d2.request, world.list_fpr, "Re: confirm", f"here it is\n{challenges[piet.address]}"
    )
    await wait_notice(world, "proof", "signed by the key", nina.fingerprint)
    told = await piet.wait_for_mail(
        lambda m: "your key for .nl" in _subject(m) and nina.fingerprint in m.text,
        what="the refusal",
    )
    assert told.decrypted and "nothing was changed" in told.text
    # Nina answers signed and encrypted; Piet signed only (PGP/MIME multipart/signed).
    await nina.send(d2.request, world.list_fpr, "Re: confirm", challenges[nina.address])
    entity = await piet.signed_entity(d2.request, "Re: confirm", challenges[piet.address])
    head = (
        f"From: {piet.name} <{piet.address}>\r\nTo: {d2.request}\r\nSubject: Re: confirm\r\n"
        f"Message-ID: {make_msgid(domain='test.example')}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\nMIME-Version: 1.0\r\n"
    ).encode()
    await piet.send_raw(d2.request, head + entity)
    for op in (nina, piet):
        await op.wait_for_mail(lambda m: "your key is confirmed" in m.text, what="thanks")
    await wait_notice(world, "is ready", "!approve")
    case = d2.case()
    assert case is not None and getattr(case, "state", None) is CaseState.READY
    pending = await d2.admin("!pending")
    assert "an admin's !approve" in pending.text

    approved = await d2.admin(f"!approve {getattr(case, 'id', 0)}")
    assert approved.ok, approved.text
    welcome = await nina.wait_for_mail(lambda m: "Welcome to SECIR" in m.text, what="welcome")
    assert welcome.decrypted
    await world.mx["carol"].wait_for_event(lambda e: "new member: .nl" in e.body)
    # The new member posts, and receives the list's mail.
    await nina.send(world.list_address, world.list_fpr, "hello", "NINA-FIRST-POST")
    await world.mx["carol"].wait_for_event(lambda e: "NINA-FIRST-POST" in e.body)
    await world.mail["bob"].wait_for_mail(lambda m: "NINA-FIRST-POST" in m.text)
    await world.mail["bob"].send(world.list_address, world.list_fpr, "welcome", "BOB-WELCOMES")
    await nina.wait_for_mail(lambda m: "BOB-WELCOMES" in m.text, what="list mail")
    assert re.search("SECIR", welcome.text)


async def test_d2_cases_expire_on_a_durable_timer_across_a_restart(
    synapse: Synapse, mail_stack: MailStack
) -> None:
    """A case expires when due, also when the bot was stopped at the time: the admins are
    told, the audit log has it, and the code no longer works (its contact is told)."""
    days = 6 / 86400  # six seconds
    async with d2_world(synapse, mail_stack, f"\n[commands]\ncase_expiry_days = {days}\n") as d2:
        world = d2.world
        opened = await d2.admin("!invite .nl")
        assert opened.ok, opened.text
        _, code = await _invitation(d2)
        case = d2.case()
        assert case is not None
        expires = getattr(case, "expires_at", 0.0)
        await world.stop_bot()  # down while the case falls due
        await wait_until(lambda: time.time() > expires + 0.5, 30, "the expiry time to pass")
        await world.start_bot()
        await wait_notice(world, "case #1 (.nl) expired", "waited for the nomination")
        app = world.app
        assert app is not None and d2.case() is None
        closed = app.store.cases.get(getattr(case, "id", 0))
        assert closed is not None and closed.state is CaseState.EXPIRED
        entries = [e for e in app.store.audit.tail(10) if e.action == "case.expire"]
        assert [(e.actor, e.target) for e in entries] == [("secir-bot", "#1 .nl")]
        # The code of an expired case: its contact is told, nothing changes.
        blocks = await _nominee_block(d2.nominees["nina"])
        await d2.plain(d2.contact, f"code: {code}\n\n{blocks}")
        await _contact_answer(d2, d2.contact, "this code expired")
        # A case opened while the bot runs expires on time, too (the timer was woken).
        again = await d2.admin("!invite .nl")
        assert again.ok, again.text
        await wait_notice(world, "case #2 (.nl) expired")


async def test_d2_encrypted_nomination_and_clear_signed_proofs(d2: D2) -> None:
    """The other forms the procedure's mail takes: a nomination encrypted to the list key
    (not signed), and proofs clear-signed inline, unencrypted; only the signed text counts."""
    world = d2.world
    opened = await d2.admin("!invite .nl")
    assert opened.ok, opened.text
    _, code = await _invitation(d2)
    list_key = await world.keyrings["alice"].export_public(world.list_fpr)
    await d2.contact.keyring.import_key(list_key)
    nina, piet = d2.nominees["nina"], d2.nominees["piet"]
    blocks = await _nominee_block(nina) + await _nominee_block(piet)
    await d2.contact.send(
        d2.request, world.list_fpr, "nominees", f"code: {code}\n\n{blocks}", fmt="pgp-mime-nosig"
    )
    await wait_notice(world, "nominated", "Piet Bakker")
    for op in (nina, piet):
        mail = await op.wait_for_mail(lambda m: "SECIR-PROOF-" in m.text, what="the challenge")
        found = CHALLENGE_PATTERN.search(mail.text)
        assert found is not None
        if op is piet:  # unsigned: no proof, and his key is told so
            await op.send(d2.request, None, "Re: confirm", found.group(0), fmt="plain")
            told = await op.wait_for_mail(
                lambda m: "must be signed with the key" in m.text, what="the refusal"
            )
            assert told.decrypted and op.fingerprint in told.text
        if op is nina:  # the challenge outside the signed text counts for nothing
            signed = await op.clearsign(b"Here is my answer, without the line.\n")
            body = signed.decode() + "\n" + found.group(0) + "\n"
            await op.send(d2.request, None, "Re: confirm", body, fmt="plain")
            await wait_notice(world, "proof", "refused")
        signed = await op.clearsign(f"Here it is:\n{found.group(0)}\n".encode())
        await op.send(d2.request, None, "Re: confirm", signed.decode(), fmt="plain")
        await op.wait_for_mail(lambda m: "your key is confirmed" in m.text, what="thanks")
    await wait_notice(world, "is ready", "!approve")
