"""The command machinery: registry, parsing, dispatch (roles, fronts, arguments, confirmation,
audit in the same transaction, crash answers) and generated help, against a real store."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from commands_support import ADMIN, OTHER_ADMIN, STRANGER, command_context, invocation

from secir_bot.commands import (
    ADMIN_FRONTS,
    ALL_FRONTS,
    MEMBER_FRONTS,
    Actor,
    Announce,
    Arg,
    Args,
    Attachment,
    Change,
    Command,
    Context,
    Front,
    InviteToRoom,
    Invocation,
    Kind,
    NotifyAdmins,
    Refused,
    RemoveFromRooms,
    Reply,
    Role,
    RotateRoomKeys,
    SendMail,
    TrustDevice,
    WakeOutbox,
    dispatch,
    effects,
    help,
)
from secir_bot.commands.dispatch import Dispatcher
from secir_bot.commands.parse import (
    is_command_mail,
    mail_commands,
    matrix_command,
    request_address,
)
from secir_bot.commands.registry import Registry, RegistryError, build
from secir_bot.model import Channel, Member
from secir_bot.store import Store, Tx

# -- test commands (declared like real ones) --------------------------------------------


async def _note(ctx: Context, inv: Invocation, args: Args) -> Change:
    key, text = args.text("key"), args.opt_text("text") or ""

    def apply(tx: Tx) -> Reply:
        tx.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", [f"note.{key}", text])
        return Reply(f"noted {key}")

    return Change("note.set", key, f"This will note {key}.", apply, reason=text)


async def _wipe(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    key = args.text("key")
    if ctx.store.kv.get(f"note.{key}") is None:
        return Reply(f"there is no note {key}", ok=False)

    def apply(tx: Tx) -> Reply:
        tx.execute("DELETE FROM kv WHERE key = ?", [f"note.{key}"])
        return Reply(f"wiped {key}")

    return Change("note.wipe", key, f"This will wipe the note {key}.", apply)


async def _boom(ctx: Context, inv: Invocation, args: Args) -> Reply:
    raise RuntimeError("a bug in a handler")


async def _half(ctx: Context, inv: Invocation, args: Args) -> Change:
    def apply(tx: Tx) -> Reply:
        tx.execute("INSERT INTO kv (key, value) VALUES ('half', 'x')")
        raise RuntimeError("crash after a write")

    return Change("half", "x", "half", apply)


async def _race(ctx: Context, inv: Invocation, args: Args) -> Change:
    def apply(tx: Tx) -> Reply:
        tx.execute("INSERT INTO kv (key, value) VALUES ('race', 'x')")
        raise Refused("the case was approved meanwhile")

    return Change("race", "x", "race", apply)


async def _kinds(ctx: Context, inv: Invocation, args: Args) -> Reply:
    shown = [f"{a.name}={args.get(a.name)!r}" for a in KINDS.args if a.name in args]
    return Reply("; ".join(shown))


async def _whoami(ctx: Context, inv: Invocation, args: Args) -> Reply:
    return Reply(f"you are {inv.actor.id}")


def _cmd(name: str, run: object, role: Role = Role.ADMIN, **kw: object) -> Command:
    fronts = ADMIN_FRONTS if role is Role.ADMIN else MEMBER_FRONTS
    values: dict[str, object] = {"fronts": fronts} | kw
    return Command(name, f"the {name} command", f"Help for {name}.", role, run=run, **values)  # type: ignore[arg-type]


NOTE = _cmd(
    "note",
    _note,
    args=(Arg("key", Kind.WORD, "a key"), Arg("text", Kind.TEXT, "the note", optional=True)),
)
WIPE = _cmd("wipe", _wipe, args=(Arg("key", Kind.WORD, "a key"),), confirm=True)
BOOM = _cmd("boom", _boom)
HALF = _cmd("half", _half)
RACE = _cmd("race", _race)
KINDS = _cmd(
    "kinds",
    _kinds,
    args=(
        Arg("tld", Kind.TLD, "a ccTLD"),
        Arg("email", Kind.EMAIL, "an address"),
        Arg("mxid", Kind.MXID, "a Matrix id"),
        Arg("person", Kind.PERSON, "an address or Matrix id"),
        Arg("case", Kind.CASE, "a case"),
        Arg("fpr", Kind.FINGERPRINT, "a fingerprint"),
        Arg("why", Kind.TEXT, "a reason", optional=True),
    ),
)
WHOAMI = _cmd("whoami", _whoami, role=Role.MEMBER, aliases=("me",))
TEST_COMMANDS = (NOTE, WIPE, BOOM, HALF, RACE, KINDS, WHOAMI)
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"

MEMBER = Member(
    id=1,
    tld="nl",
    tld_display=".nl",
    name="Alice",
    email="alice@test.example",
    fingerprint=FPR,
    matrix_id="@alice:test.local",
    channels=frozenset({Channel.EMAIL, Channel.MATRIX}),
)
ALICE = Actor("@alice:test.local", member=MEMBER, device_trusted=True)


@pytest.fixture
def ctx() -> Iterator[Context]:
    with command_context(build(help.COMMANDS, dispatch.COMMANDS, TEST_COMMANDS)) as context:
        yield context


async def run(ctx: Context, line: str, **kw: object) -> Reply:
    return await Dispatcher(ctx).handle(invocation(line, **kw))  # type: ignore[arg-type]


# -- registry ----------------------------------------------------------------------------


def test_registry_finds_names_and_aliases_case_blind() -> None:
    registry = build(TEST_COMMANDS)
    assert registry.lookup("WHOAMI") is WHOAMI
    assert registry.lookup("me") is WHOAMI
    assert registry.lookup("nope") is None
    assert list(registry) == list(TEST_COMMANDS)


def test_two_registries_coexist_and_nothing_registers_at_import() -> None:
    first, second = build((NOTE,)), build((WIPE, BOOM))
    assert first.lookup("note") and not first.lookup("wipe")
    assert second.lookup("wipe") and not second.lookup("note")


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        ((NOTE, replace(WIPE, name="note")), "!note is declared twice"),
        ((WHOAMI, replace(NOTE, aliases=("me",))), "!me is declared twice"),
        ((replace(NOTE, name="Note!"),), "lower-case letters"),
        ((replace(NOTE, summary=" "),), "needs a summary and a help text"),
        ((replace(NOTE, help=""),), "needs a summary and a help text"),
        ((replace(NOTE, fronts=frozenset()),), "offered on no front end"),
        ((replace(NOTE, args=(Arg("t", Kind.TEXT, "x"), Arg("k", Kind.WORD, "y"))),), "last"),
        (
            (replace(NOTE, args=(Arg("a", Kind.WORD, "x", True), Arg("b", Kind.WORD, "y"))),),
            "follows an optional argument",
        ),
        ((replace(NOTE, args=(Arg("a", Kind.WORD, " "),)),), "<a> has no help"),
    ],
)
def test_bad_declarations_fail_at_build(commands: tuple[Command, ...], message: str) -> None:
    with pytest.raises(RegistryError, match=re.escape(message)):
        Registry(commands)


# -- parsing -----------------------------------------------------------------------------


def test_matrix_parsing() -> None:
    line = matrix_command("  !Revoke .nl “key lost” \nsecond line")
    assert line is not None
    assert (line.name, line.args, line.body) == ("revoke", (".nl", "key lost"), "second line")
    for text in ("hello", "! not", "!!", "!1", "", "an !inline one"):
        assert matrix_command(text) is None


def test_mail_parsing_reads_lines_until_signature_or_quote() -> None:
    body = (
        "help\r\n\r\n!members .nl\r\nkey alice@x.nl\r\n"
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\r\nmQINBF\r\n-----END PGP PUBLIC KEY BLOCK-----\r\n"
        "leave\r\n-- \r\nAlice\r\nrevoke .br\r\n"
    )
    lines, problems = mail_commands(body)
    assert [(x.name, x.args) for x in lines] == [
        ("help", ()),
        ("members", (".nl",)),
        ("key", ("alice@x.nl",)),
        ("leave", ()),
    ]
    assert lines[2].body.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert lines[2].body.endswith("-----END PGP PUBLIC KEY BLOCK-----")
    assert problems == []
    quoted, _ = mail_commands("help\nOn Tue, 1 Dec 2026, SECIR wrote:\n> revoke .nl\n")
    assert [x.name for x in quoted] == ["help"]
    quoted, _ = mail_commands("help\n> revoke .nl\n")
    assert [x.name for x in quoted] == ["help"]


def test_mail_parsing_reports_bad_lines_and_caps_the_count() -> None:
    lines, problems = mail_commands('help "x\n1bad\nhelp\n')
    assert [x.name for x in lines] == ["help"]
    assert problems == [
        "cannot read 'help \"x': a quote is not closed",
        "'1bad' is not a command name",
    ]
    lines, problems = mail_commands("help\n" * 30)
    assert len(lines) == 20
    assert problems == ["only the first 20 commands of a mail are read"]


def test_request_address() -> None:
    assert request_address("SECIR@Lists.Test.Example") == "secir+request@lists.test.example"
    assert request_address("secir@x.nl", "secir-request@x.nl") == "secir-request@x.nl"
    request = request_address("secir@x.nl")
    assert is_command_mail(["other@x.nl", "SECIR+Request@x.nl "], request)
    assert not is_command_mail(["secir@x.nl"], request)


# -- dispatch: who, where, what ------------------------------------------------------------


async def test_a_change_is_applied_and_audited_in_one_transaction(ctx: Context) -> None:
    reply = await run(ctx, "!note k1 first note")
    assert reply.ok and reply.text == "noted k1"
    assert ctx.store.kv.get("note.k1") == "first note"
    (entry,) = ctx.store.audit.entries()
    assert (entry.actor, entry.action, entry.target, entry.reason) == (
        "@admin:test.local",
        "note.set",
        "k1",
        "first note",
    )
    assert entry.evidence_map == {"ref": "$event:test.local"}
    assert ctx.store.audit.verify().ok


async def test_unknown_command(ctx: Context) -> None:
    reply = await run(ctx, "!frobnicate")
    assert not reply.ok
    assert reply.text == "there is no command !frobnicate; !help lists the commands"


async def test_refusals_by_mail_name_commands_as_mail_writes_them(ctx: Context) -> None:
    """By mail a command is a bare word: an answer that says "!help" sends the member to
    a spelling their front end does not read."""
    unknown = await run(ctx, "!frobnicate", front=Front.EMAIL)
    assert unknown.text == "there is no command frobnicate; help lists the commands"
    admin_only = await run(ctx, "!note k1 x", actor=ALICE, front=Front.EMAIL)
    assert admin_only.text.startswith("note is ")
    assert "!" not in admin_only.text


@pytest.mark.parametrize(
    ("actor", "message"),
    [
        (STRANGER, "!note is for the list's admins only"),
        (ALICE, "!note is for the list's admins only"),
        (replace(ADMIN, power_ok=False), "needs the admin power level in the control room"),
        (replace(ADMIN, device_trusted=False), "from a device the bot does not trust"),
    ],
)
async def test_non_admins_are_refused_and_nothing_changes(
    ctx: Context, actor: Actor, message: str
) -> None:
    reply = await run(ctx, "!note k1 x", actor=actor)
    assert not reply.ok
    assert message in reply.text
    assert ctx.store.kv.get("note.k1") is None
    assert ctx.store.audit.entries() == []


async def test_wrong_front_and_unencrypted_are_refused(ctx: Context) -> None:
    reply = await run(ctx, "!note k1 x", front=Front.INCIDENT_ROOM)
    assert reply.text == "!note is not available in the incident room; use: control room"
    reply = await run(ctx, "!note k1 x", encrypted=False)
    assert reply.text == "commands are accepted only end-to-end encrypted; nothing was done"
    assert ctx.store.kv.get("note.k1") is None


async def test_member_commands_for_members_only(ctx: Context) -> None:
    assert (await run(ctx, "!me", actor=ALICE, front=Front.DIRECT)).text == (
        "you are @alice:test.local"
    )
    revoked = replace(ALICE, member=replace(MEMBER, status="revoked"))
    reply = await run(ctx, "!whoami", actor=revoked, front=Front.EMAIL)
    assert reply.text == "whoami is for members of the list"  # by mail, no "!"


async def test_arguments_are_validated_each_problem_named(ctx: Context) -> None:
    reply = await run(ctx, "!kinds .com alice@nl @Bob:x.nl nobody #0 ABCD")
    assert not reply.ok
    assert reply.text.splitlines() == [
        "usage: !kinds <tld> <email> <mxid> <person> <case> <fpr> [why]",
        "- <tld>: .com is a generic TLD, not a country-code TLD; secir-bot serves ccTLDs "
        "only (like .nl or .рф)",
        "- <email>: not an email address (the domain needs a dot): 'alice@nl'",
        "- <mxid>: not a Matrix user id (@name:server): '@Bob:x.nl'",
        "- <person>: give an email address or a Matrix id, not 'nobody'",
        "- <case>: '#0' is not a case number like #12",
        "- <fpr>: a v4 fingerprint has 40 hex digits, this has 4",
    ]


async def test_arguments_missing_and_extra(ctx: Context) -> None:
    reply = await run(ctx, "!wipe")
    assert reply.text == "usage: !wipe <key>\n- <key> is missing (a key)"
    reply = await run(ctx, "!wipe a b")
    assert reply.text == "usage: !wipe <key>\n- too many arguments: 'b'"


async def test_arguments_are_converted(ctx: Context) -> None:
    reply = await run(
        ctx, f"!kinds рф Alice@X.nl @bob:x.nl @carol:x.nl #12 {FPR.lower()} lost the key"
    )
    assert reply.ok, reply.text
    assert "email='alice@x.nl'" in reply.text
    assert "case=12" in reply.text
    assert f"fpr='{FPR}'" in reply.text
    assert "why='lost the key'" in reply.text
    assert "xn--p1ai" in reply.text


async def test_a_crash_is_answered_with_a_reference(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="secir_bot.commands.dispatch"):
        reply = await run(ctx, "!boom")
    assert not reply.ok
    ref = re.search(r"reference ([0-9a-f]{8})", reply.text)
    assert ref is not None
    assert "Traceback" not in reply.text and "a bug in a handler" not in reply.text
    assert ref.group(1) in caplog.text and "a bug in a handler" in caplog.text


async def test_a_crash_inside_the_transaction_changes_nothing(ctx: Context) -> None:
    reply = await run(ctx, "!half")
    assert "internal error" in reply.text
    assert ctx.store.kv.get("half") is None
    assert ctx.store.audit.entries() == []
    assert (await run(ctx, "!race")).text == "the case was approved meanwhile"
    assert ctx.store.kv.get("race") is None
    assert ctx.store.audit.entries() == []


# -- confirmation --------------------------------------------------------------------------


def _code(reply: Reply) -> str:
    found = re.search(r"!confirm ([A-Z0-9]{4}-[A-Z0-9]{4})", reply.text)
    assert found is not None, reply.text
    return found.group(1)


async def test_confirmation_is_asked_then_applied_once(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    asked = await run(ctx, "!wipe k1")
    assert asked.ok
    assert asked.text.startswith("This will wipe the note k1.\nTo go ahead, send !confirm ")
    assert ctx.store.kv.get("note.k1") == "x"  # nothing yet
    code = _code(asked)
    done = await run(ctx, f"!confirm {code.lower()}")
    assert done.text == "wiped k1"
    assert ctx.store.kv.get("note.k1") is None
    entry = ctx.store.audit.tail(1)[0]
    assert (entry.action, entry.evidence_map.get("confirmed")) == ("note.wipe", "yes")
    await run(ctx, "!note k1 again")
    again = await run(ctx, f"!confirm {code}")
    assert again.text == "this confirmation code was already used"
    assert ctx.store.kv.get("note.k1") == "again"


async def test_confirmation_codes_are_stored_hashed(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    dump = "\n".join(ctx.store.db.conn.iterdump())
    assert code not in dump and code.replace("-", "") not in dump


async def test_confirmation_bound_to_actor_and_front(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    other = await run(ctx, f"!confirm {code}", actor=OTHER_ADMIN)
    assert other.text == "this confirmation code was given to someone else, or elsewhere"
    assert ctx.store.kv.get("note.k1") == "x"
    assert (await run(ctx, f"!confirm {code}")).text == "wiped k1"


async def test_confirmation_expires(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    real_clock = ctx.clock
    ctx.clock = lambda: real_clock() + ctx.config.commands.confirm_ttl + 1
    assert (await run(ctx, f"!confirm {code}")).text == (
        "this confirmation code has expired; run the command again"
    )
    assert ctx.store.kv.get("note.k1") == "x"


async def test_wrong_code_and_changed_state(ctx: Context) -> None:
    assert (await run(ctx, "!confirm ZZZZ-ZZZZ")).text.startswith(
        "that confirmation code is not known"
    )
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    await run(ctx, "!note k1 x")  # still there; now remove it another way
    with ctx.store.transaction() as tx:
        tx.execute("DELETE FROM kv WHERE key = 'note.k1'")
    assert (await run(ctx, f"!confirm {code}")).text == "there is no note k1"
    assert (await run(ctx, f"!confirm {code}")).text == "this confirmation code was already used"


async def test_confirm_needs_the_role_of_the_command(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    demoted = replace(ADMIN, power_ok=False)
    reply = await run(ctx, f"!confirm {code}", actor=demoted)
    assert "admin power level" in reply.text
    assert ctx.store.kv.get("note.k1") == "x"


# -- help ----------------------------------------------------------------------------------


async def test_help_lists_what_the_asker_may_use_here(ctx: Context) -> None:
    admin_help = (await run(ctx, "!help")).text
    assert "!note <key> [text] - the note command" in admin_help
    assert "!whoami" not in admin_help  # a member command, not in the control room
    member_help = (await run(ctx, "!help", actor=ALICE, front=Front.INCIDENT_ROOM)).text
    assert "!whoami - the whoami command" in member_help
    assert "!note" not in member_help
    mail_help = (await run(ctx, "!help", actor=ALICE, front=Front.EMAIL)).text
    assert "whoami - the whoami command" in mail_help and "!whoami" not in mail_help
    assert "help <command>" in mail_help


async def test_help_for_one_command(ctx: Context) -> None:
    text = (await run(ctx, "!help wipe")).text
    assert text.startswith("!wipe <key> - the wipe command\n\nHelp for wipe.")
    assert "<key> (word): a key" in text
    assert "Asks for confirmation" in text and "Who: the list's admins" in text
    hidden = await run(ctx, "!help note", actor=ALICE, front=Front.DIRECT)
    assert not hidden.ok and "there is no command !note for you here" in hidden.text


def test_every_front_is_covered() -> None:
    assert ALL_FRONTS == ADMIN_FRONTS | MEMBER_FRONTS == set(Front)


# -- !audit ----------------------------------------------------------------------------------


async def test_audit_tail_and_verdict() -> None:
    from secir_bot.commands import audit

    with command_context(build(audit.COMMANDS, TEST_COMMANDS)) as ctx:
        assert (await run(ctx, "!audit")).text.splitlines() == [
            "(the audit log is empty)",
            f"the audit chain verifies: 0 entries, head 0:{'0' * 64}",
        ]
        for i in range(3):
            await run(ctx, f"!note k{i} reason {i}")
        reply = await run(ctx, "!audit 2")
        lines = reply.text.splitlines()
        assert reply.ok and len(lines) == 3
        assert re.fullmatch(
            r"#2 \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ @admin:test.local note.set k1 - reason 1 "
            r'\{"ref": "\$event:test.local"\}',
            lines[0],
        )
        assert lines[2] == ctx.store.audit.verify().summary()
        ctx.store.db.execute("DROP TRIGGER audit_no_update")
        ctx.store.db.execute("UPDATE audit SET target = 'k9' WHERE seq = 1")
        broken = await run(ctx, "!audit")
        assert not broken.ok
        assert "THE AUDIT CHAIN IS BROKEN: entry 1 does not match its hash" in broken.text


async def test_confirmation_survives_a_restart(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    directory = ctx.store.directory
    ctx.store.close()
    ctx.store = Store.open(directory)  # the bot restarted between the command and !confirm
    assert (await run(ctx, f"!confirm {code}")).text == "wiped k1"


async def test_long_expired_codes_are_purged(ctx: Context) -> None:
    await run(ctx, "!note k1 x")
    code = _code(await run(ctx, "!wipe k1"))
    real_clock = ctx.clock
    ctx.clock = lambda: real_clock() + 2 * 86400
    await run(ctx, "!note k2 x")
    await run(ctx, "!wipe k2")  # asking for a new code purges the old one
    assert (await run(ctx, f"!confirm {code}")).text.startswith(
        "that confirmation code is not known"
    )


# -- durable effects -------------------------------------------------------------------------


EVERY_EFFECT = (
    SendMail(
        to=("a@test.example",),
        subject="s",
        body="b\nü",
        encrypt_to=(FPR,),
        attachments=(Attachment("k.asc", "application/pgp-keys", b"\x00\xffkey"),),
        reply_to="list+request@test.example",
    ),
    Announce("new member: .nl"),
    NotifyAdmins("x"),
    InviteToRoom("@a:test.local", Front.INCIDENT_ROOM),
    RemoveFromRooms("@a:test.local", "revoked"),
    RotateRoomKeys(Front.INCIDENT_ROOM),
    TrustDevice("@a:test.local", "DEV"),
    WakeOutbox(),
)


@pytest.mark.parametrize("effect", EVERY_EFFECT, ids=lambda e: type(e).__name__)
def test_effects_round_trip_through_json(effect: object) -> None:
    assert effects.loads(effects.dumps(effect)) == effect  # type: ignore[arg-type]


async def _effectful(ctx: Context, inv: Invocation, args: Args) -> Change:
    def apply(tx: Tx) -> Reply:
        tx.execute("INSERT INTO kv (key, value) VALUES ('fx', 'x')")
        if args.opt_text("fail"):
            raise Refused("changed meanwhile")
        return Reply("done", effects=EVERY_EFFECT[:2])

    return Change("fx", "x", "fx", apply)


async def test_effects_are_queued_with_the_change_or_not_at_all() -> None:
    fx = _cmd("fx", _effectful, args=(Arg("fail", Kind.WORD, "fail", optional=True),))
    with command_context(build((fx,))) as ctx:
        refused = await run(ctx, "!fx yes")
        assert not refused.ok and ctx.store.effects.pending() == []
        reply = await run(ctx, "!fx")
        assert reply.ok and len(reply.queued) == 2
        pending = ctx.store.effects.pending()
        assert [p.id for p in pending] == list(reply.queued)
        assert [effects.loads(p.effect) for p in pending] == list(EVERY_EFFECT[:2])
        assert {(p.actor, p.action) for p in pending} == {("@admin:test.local", "fx")}
        with ctx.store.transaction() as tx:
            assert ctx.store.effects.done(tx, pending[0].id, 1.0)
            assert not ctx.store.effects.done(tx, pending[0].id, 2.0)
        assert [p.id for p in ctx.store.effects.pending()] == [pending[1].id]
        erased = ctx.store.db.execute(
            "SELECT effect, done_at FROM command_effects WHERE id = ?", [pending[0].id]
        ).fetchone()
        assert erased == ("", 1.0)  # a mail's one-time secret does not outlive its sending
