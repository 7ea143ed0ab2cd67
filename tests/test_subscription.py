"""The D2 subscription procedure end to end at the command level, against real SQLite, real
gpg (the nominees' own keys, challenges decrypted and answered with real signatures) and the
whois responder on loopback serving IANA-format records.

The mail and Matrix front ends are not wired yet: the effects (the invitation and challenge
mails, the invitations) are checked as the values a front end will deliver.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from commands_support import ADMIN, command_context, invocation
from servers import GpgWorld

from secir_bot.cases import CHALLENGE_PATTERN, CaseState
from secir_bot.commands import (
    Announce,
    Context,
    Front,
    InviteToRoom,
    NotifyAdmins,
    Reply,
    SendMail,
    effects,
    subscription,
)
from secir_bot.commands.dispatch import Dispatcher
from secir_bot.commands.registry import default
from secir_bot.sandbox.whois import WhoisResponder, iana_records
from secir_bot.sandbox.world import offline_config
from secir_bot.whois import WhoisServer

ALICE, BOB, CAROL = "alice@test.example", "bob@test.example", "carol@test.example"
ADMIN_NL = "admin-nl@test.example"


@pytest.fixture
async def responder() -> AsyncIterator[WhoisResponder]:
    async with WhoisResponder(iana_records("test.example")) as server:
        yield server


@pytest.fixture
def ctx(responder: WhoisResponder, gpg_world: GpgWorld, tmp_path: Path) -> Iterator[Context]:
    admin_keys = gpg_world.make_home([BOB], secret=False)  # the admins' own keyring
    config = offline_config(tmp_path, "test.example")
    config = dataclasses.replace(
        config, commands=dataclasses.replace(config.commands, keyring=admin_keys)
    )
    whois = WhoisServer(host="127.0.0.1", port=responder.port, timeout=0.5)
    with command_context(default(), whois=whois, config=config) as context:
        yield context


async def run(ctx: Context, line: str, **kw: object) -> Reply:
    return await Dispatcher(ctx).handle(invocation(line, **kw))  # type: ignore[arg-type]


def _mail(reply: Reply) -> SendMail:
    (mail,) = [e for e in reply.effects if isinstance(e, SendMail)]
    return mail


def _code(mail: SendMail) -> str:
    found = re.search(r"^code: (\S+)$", mail.body, re.M)
    assert found is not None
    return found.group(1)


def nomination(gpg_world: GpgWorld, code: str, carol_key: str = "") -> str:
    bob_fpr = gpg_world.fingerprint(BOB)
    return f"""Hello,

code: {code}

name: Alice Jansen
email: {ALICE}
phone: +31 70 123 4567
timezone: Europe/Amsterdam
languages: nl, en
{gpg_world.export_public(ALICE)}
name: Bob Silva
email: {BOB}
fingerprint: {bob_fpr}
matrix: @bob:test.local

name: Carol Tanaka
email: {CAROL}
{carol_key or gpg_world.export_public(CAROL)}
--
The registry
"""


async def answer_challenge(ctx: Context, gpg_world: GpgWorld, mail: SendMail, signer: str) -> Reply:
    """The nominee decrypts the challenge mail with their own key and answers it signed."""
    (fpr,) = mail.encrypt_to
    ciphertext = await ctx.keyring.encrypt(mail.body.encode(), [fpr])
    home = gpg_world.make_home([mail.to[0]])
    clear = gpg_world.gpg(home, "--decrypt", input=ciphertext).stdout.decode()
    challenge = CHALLENGE_PATTERN.search(clear)
    assert challenge is not None
    signed = gpg_world.gpg(
        gpg_world.home,
        "--clearsign",
        "--local-user",
        gpg_world.fingerprint(signer),
        input=f"Here is my answer:\n{challenge.group(0)}\n".encode(),
    ).stdout
    verified = await ctx.keyring.verify_clearsigned(signed)
    return subscription.proof_received(
        ctx, signer=verified.signer, text=signed.decode(), ref=f"<proof-{signer}>"
    )


async def test_d2_from_invite_to_approve(ctx: Context, gpg_world: GpgWorld) -> None:
    # 1. !invite .nl: whois finds IANA's administrative contact, who gets the code.
    invited = await run(ctx, "!invite .nl")
    assert invited.ok, invited.text
    assert "Case #1 opened for .nl" in invited.text
    assert f"IANA's administrative contact {ADMIN_NL} (SIDN" in invited.text
    mail = _mail(invited)
    assert mail.to == (ADMIN_NL,) and mail.encrypt_to == ()
    assert mail.reply_to == "list+request@test.example"
    code = _code(mail)
    (queued,) = ctx.store.effects.pending()  # durable with the case, until sent
    assert effects.loads(queued.effect) == mail and invited.queued == (queued.id,)
    with ctx.store.transaction() as tx:  # the front end sent it
        ctx.store.effects.done(tx, queued.id, ctx.clock())
    entry = ctx.store.audit.tail(1)[0]
    assert (entry.action, entry.target) == ("case.invite", ".nl")
    whois_hash = entry.evidence_map["whois_sha256"]
    assert (
        whois_hash
        == __import__("hashlib").sha256(iana_records("test.example")["nl"].encode()).hexdigest()
    )
    assert code not in "\n".join(ctx.store.db.conn.iterdump())  # now only its hash

    # A second invitation while the case is open is refused.
    again = await run(ctx, "!invite nl")
    assert not again.ok and "case #1 for .nl is open already" in again.text

    # 2. The nomination: from someone else is refused; from a personal address with the
    # administrative contact in Cc it is accepted.
    text = nomination(gpg_world, code)
    wrong = await subscription.nomination_received(
        ctx, sender="mallory@test.example", cc=(), body=text, ref="<n0>"
    )
    assert wrong.text == f"the nomination must come from {ADMIN_NL}, or have it in Cc"
    nominated = await subscription.nomination_received(
        ctx, sender="ceo@test.example", cc=(ADMIN_NL,), body=text, ref="<n1>"
    )
    assert nominated.ok, nominated.text
    case = ctx.store.cases.get(1)
    assert case is not None and case.state is CaseState.NOMINATED
    assert [n.email for n in case.nominees] == [ALICE, BOB, CAROL]
    assert case.nominees[1].fingerprint == gpg_world.fingerprint(BOB)  # from the admins' ring
    challenges = {e.to[0]: e for e in nominated.effects if isinstance(e, SendMail)}
    assert {m.encrypt_to[0] for m in challenges.values()} == {
        gpg_world.fingerprint(x) for x in (ALICE, BOB, CAROL)
    }
    assert InviteToRoom("@bob:test.local", Front.DIRECT) in nominated.effects
    reused = await subscription.nomination_received(
        ctx, sender=ADMIN_NL, cc=(), body=text, ref="<n2>"
    )
    assert reused.text == "this code was already used (case #1 is nominated)"

    # 3. Proofs: a reply signed by another key changes nothing; the right ones do.
    forged = await answer_challenge(ctx, gpg_world, challenges[BOB], ALICE)
    assert forged.text == (
        f"the answer is signed by the key {gpg_world.fingerprint(ALICE)}, but the challenge "
        f"was sent to the key {gpg_world.fingerprint(BOB)}; nothing was changed"
    )
    unknown = await answer_challenge(ctx, gpg_world, challenges[BOB], "mallory@test.example")
    assert unknown.text == f"the answer must be signed with the key {gpg_world.fingerprint(BOB)}"
    for who in (ALICE, BOB, CAROL):
        proved = await answer_challenge(ctx, gpg_world, challenges[who], who)
        assert proved.ok, proved.text
    replay = await answer_challenge(ctx, gpg_world, challenges[ALICE], ALICE)
    assert replay.text == "this challenge is not known, or was answered already"
    pending = await run(ctx, "!pending")
    assert "waits for Bob Silva <bob@test.example>: @bob:test.local to accept" in pending.text
    assert (await run(ctx, "!approve 1")).text.startswith("case #1 is nominated; it waits for")

    # 4. Bob's Matrix account accepts the bot's invitation: the case is ready.
    (joined,) = subscription.matrix_joined(ctx, "@bob:test.local", "$join")
    assert any(isinstance(e, NotifyAdmins) and "is ready" in e.text for e in joined.effects)
    assert ctx.store.cases.get(1).state is CaseState.READY  # type: ignore[union-attr]

    # 5. !approve: members, welcome mails, the room invitation, the announcement.
    approved = await run(ctx, "!approve #1")
    assert approved.ok, approved.text
    members = {m.email: m for m in ctx.store.members.all()}
    assert set(members) == {ALICE, BOB, CAROL}
    assert [members[x].rank for x in (ALICE, BOB, CAROL)] == [1, 2, 3]
    assert members[BOB].matrix_id == "@bob:test.local"
    welcomes = [e for e in approved.effects if isinstance(e, SendMail)]
    assert {w.to[0] for w in welcomes} == {ALICE, BOB, CAROL}
    assert all(w.encrypt_to == (members[w.to[0]].fingerprint,) for w in welcomes)
    assert InviteToRoom("@bob:test.local", Front.INCIDENT_ROOM) in approved.effects
    assert Announce("new member: .nl (Alice Jansen, Bob Silva, Carol Tanaka)") in approved.effects
    assert (await run(ctx, "!approve 1")).text.startswith("case #1 is approved")

    # Everything is in the audit log, and the chain verifies.
    actions = [e.action for e in ctx.store.audit.entries()]
    assert actions == [
        "case.invite",
        "case.nominate",
        "case.proof",
        "case.proof",
        "case.proof",
        "case.matrix-joined",
        "case.approve",
    ]
    assert ctx.store.audit.verify().ok


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("slow", "did not answer within 0.5 s"),
        ("garbage", "not text"),
        ("refuse", "rate limit"),
        ("empty", "empty answer"),
    ],
)
async def test_a_bad_whois_server_changes_nothing(
    ctx: Context, responder: WhoisResponder, mode: str, message: str
) -> None:
    responder.mode = mode  # type: ignore[assignment]
    reply = await run(ctx, "!invite .jp")
    assert not reply.ok
    assert message in reply.text
    assert "Nothing was sent" in reply.text and "!invite-via .jp" in reply.text
    assert ctx.store.cases.open_cases() == []
    assert ctx.store.audit.entries() == []


async def test_whois_down(ctx: Context, responder: WhoisResponder) -> None:
    await responder.stop()
    reply = await run(ctx, "!invite .br")
    assert "cannot reach the whois server" in reply.text
    assert ctx.store.cases.open_cases() == []


async def test_a_tld_iana_does_not_know(ctx: Context) -> None:
    reply = await run(ctx, "!invite .fr")  # a ccTLD, but the responder has no record
    assert reply.text.startswith("cannot invite .fr: IANA has no record for .fr")


async def test_idn_cctld_both_spellings_are_one_case(ctx: Context) -> None:
    first = await run(ctx, "!invite .рф")
    assert first.ok, first.text
    assert _mail(first).to == ("admin-rf@test.example",)
    second = await run(ctx, "!invite xn--p1ai")
    assert "case #1 for .рф is open already" in second.text


async def test_generic_and_unknown_tlds_are_refused(ctx: Context) -> None:
    assert "is a generic TLD, not a country-code TLD" in (await run(ctx, "!invite .com")).text
    assert "not a delegated" in (await run(ctx, "!invite .zz")).text


async def test_admin_override_of_the_address_is_audited(ctx: Context) -> None:
    reply = await run(ctx, "!invite-via .uk registry-ops@test.example IANA record outdated")
    assert reply.ok, reply.text
    assert _mail(reply).to == ("registry-ops@test.example",)
    case = ctx.store.cases.open_for("uk")
    assert case is not None and case.contact_source == "override"
    entry = ctx.store.audit.tail(1)[0]
    assert (entry.action, entry.reason) == ("case.invite-via", "IANA record outdated")
    assert entry.evidence_map["override"] == "registry-ops@test.example"
    missing = await run(ctx, "!invite-via .br registry-ops@test.example")
    assert "<reason> is missing" in missing.text


async def _open(ctx: Context, tld: str = ".nl") -> str:
    return _code(_mail(await run(ctx, f"!invite {tld}")))


@pytest.mark.parametrize(
    ("nominee", "problem"),
    [
        ("expired@test.example", "the key has expired"),
        ("revoked@test.example", "the key is revoked"),
        ("signonly@test.example", "the key has no usable encryption subkey"),
    ],
)
async def test_unusable_nominee_keys_are_refused(
    ctx: Context, gpg_world: GpgWorld, nominee: str, problem: str
) -> None:
    code = await _open(ctx)
    body = (
        f"code: {code}\nname: X\nemail: {nominee}\nphone: +31701234567\n"
        + gpg_world.export_public(nominee)
    )
    reply = await subscription.nomination_received(ctx, sender=ADMIN_NL, cc=(), body=body, ref="")
    assert not reply.ok
    assert problem in reply.text
    assert ctx.store.cases.open_for("nl").state is CaseState.INVITED  # type: ignore[union-attr]


async def test_a_key_without_the_nominees_address(ctx: Context, gpg_world: GpgWorld) -> None:
    code = await _open(ctx)
    body = f"code: {code}\nname: X\nemail: dave@test.example\nphone: +31701234567\n"
    body += gpg_world.export_public(ALICE)
    reply = await subscription.nomination_received(ctx, sender=ADMIN_NL, cc=(), body=body, ref="")
    assert "no user id of the key carries dave@test.example" in reply.text


async def test_a_fingerprint_not_in_the_admins_keyring(ctx: Context, gpg_world: GpgWorld) -> None:
    code = await _open(ctx)
    body = f"code: {code}\nname: A\nemail: {ALICE}\nphone: +31701234567\n"
    body += f"fingerprint: {gpg_world.fingerprint(ALICE)}\n"
    reply = await subscription.nomination_received(ctx, sender=ADMIN_NL, cc=(), body=body, ref="")
    assert "is not in the admins' keyring; paste or attach the key" in reply.text


async def test_garbage_key_and_wrong_code(ctx: Context) -> None:
    code = await _open(ctx)
    body = f"code: {code}\nname: A\nemail: {ALICE}\nphone: +31701234567\n"
    body += "-----BEGIN PGP PUBLIC KEY BLOCK-----\nnot a key\n-----END PGP PUBLIC KEY BLOCK-----\n"
    reply = await subscription.nomination_received(ctx, sender=ADMIN_NL, cc=(), body=body, ref="")
    assert "gpg cannot read that key" in reply.text
    wrong = body.replace(code, "AAAAA-BBBBB-CCCCC-DDDDD")
    reply = await subscription.nomination_received(ctx, sender=ADMIN_NL, cc=(), body=wrong, ref="")
    assert reply.text.startswith("this code is not known")


async def test_cases_expire(ctx: Context, gpg_world: GpgWorld) -> None:
    code = await _open(ctx, ".br")
    later = ctx.clock() + 31 * 86400
    ctx.clock = lambda: later
    (expired,) = subscription.expire_due(ctx)
    assert "case #1 (.br) expired" in expired.text
    assert ctx.store.cases.get(1).state is CaseState.EXPIRED  # type: ignore[union-attr]
    assert subscription.expire_due(ctx) == []
    reply = await subscription.nomination_received(
        ctx, sender="admin-br@test.example", cc=(), body=nomination(gpg_world, code), ref=""
    )
    assert reply.text.startswith("this code expired on")
    entry = ctx.store.audit.tail(1)[0]
    assert (entry.actor, entry.action) == ("secir-bot", "case.expire")
    # A new invitation may follow an expired case.
    assert (await run(ctx, "!invite .br")).ok


async def test_expiry_is_configurable(
    gpg_world: GpgWorld, responder: WhoisResponder, tmp_path: Path
) -> None:
    config = offline_config(tmp_path, "test.example")
    config = dataclasses.replace(
        config, commands=dataclasses.replace(config.commands, case_expiry_days=2)
    )
    whois = WhoisServer(host="127.0.0.1", port=responder.port, timeout=0.5)
    with command_context(default(), whois=whois, config=config) as ctx:
        reply = await run(ctx, "!invite .nl")
        case = ctx.store.cases.open_for("nl")
        assert case is not None
        assert case.expires_at - case.opened_at == pytest.approx(2 * 86400)
        assert "expires on" in reply.text


async def test_reject_and_pending(ctx: Context) -> None:
    assert (await run(ctx, "!pending")).text == "no open cases"
    await run(ctx, "!invite .nl")
    pending = await run(ctx, "!pending")
    assert re.match(
        r"#1 \.nl invited since \d{4}-\d\d-\d\d \(by @admin:test.local; contact "
        r"admin-nl@test.example, whois\); waits for the nomination",
        pending.text,
    )
    reply = await run(ctx, "!reject #1 not a ccTLD we serve yet")
    assert reply.text == "case #1 (.nl) rejected: not a ccTLD we serve yet"
    assert (await run(ctx, "!reject 1 again")).text == "case #1 is closed already (rejected)"
    assert (await run(ctx, "!approve 7")).text == "there is no case #7"


async def test_only_admins_in_the_control_room(ctx: Context) -> None:
    from commands_support import STRANGER

    reply = await run(ctx, "!invite .nl", actor=STRANGER)
    assert reply.text == "!invite is for the list's admins only"
    reply = await run(ctx, "!invite .nl", front=Front.EMAIL, actor=ADMIN)
    assert "not available in the email" in reply.text
    assert ctx.store.cases.open_cases() == []


def test_mail_to_the_request_address_is_told_apart() -> None:
    assert subscription.kind_of_request("code: ABCDE-FGHJK-MNPQR-STVWX\nname: A") == "nomination"
    assert subscription.kind_of_request("ok\nSECIR-PROOF-ABCDE-FGHJK-MNPQR-STVWX\n") == "proof"
    assert subscription.kind_of_request("help\nleave\n") == "commands"
    assert subscription.kind_of_request("help\n> code: ABCDE-FGHJK-MNPQR-STVWX\n") == "commands"
