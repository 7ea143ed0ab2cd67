"""Roster and operations commands: direct subscription, !members, !member, !key, !revoke
(with confirmation), !leave, and !deadletters, !retry, !devices, !trust, !block, !status,
!listkey, against a real store and real gpg keys."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from commands_support import command_context, invocation, member_actor
from servers import GpgWorld

from secir_bot.commands import (
    Announce,
    Attachment,
    Context,
    Front,
    InviteToRoom,
    NotifyAdmins,
    RemoveFromRooms,
    Reply,
    RotateRoomKeys,
    SendMail,
    TrustDevice,
    WakeOutbox,
)
from secir_bot.commands.dispatch import Dispatcher
from secir_bot.commands.registry import default
from secir_bot.model import Channel
from secir_bot.sandbox.world import offline_config
from secir_bot.store import NewDelivery

ALICE, BOB, CAROL = "alice@test.example", "bob@test.example", "carol@test.example"


@pytest.fixture
def ctx(gpg_world: GpgWorld, tmp_path: Path) -> Iterator[Context]:
    config = offline_config(tmp_path, "test.example")
    config = dataclasses.replace(
        config,
        commands=dataclasses.replace(
            config.commands, keyring=gpg_world.make_home([CAROL], secret=False)
        ),
    )
    with command_context(default(), config=config) as context:
        yield context


async def run(ctx: Context, line: str, **kw: object) -> Reply:
    return await Dispatcher(ctx).handle(invocation(line, **kw))  # type: ignore[arg-type]


async def subscribe_three(ctx: Context, gpg_world: GpgWorld) -> None:
    """Alice (key pasted), Bob (key attached), Carol (fingerprint from the admins' keyring)."""
    replies = [
        await run(
            ctx,
            f"!invite .nl {ALICE} @alice:test.local Alice Jansen",
            body=gpg_world.export_public(ALICE),
        ),
        await run(
            ctx,
            f"!invite .nl {BOB}",
            attachments=(
                Attachment(
                    "bob.asc", "application/pgp-keys", gpg_world.export_public(BOB).encode()
                ),
            ),
        ),
        await run(ctx, f"!invite .br {CAROL} {gpg_world.fingerprint(CAROL)} Carol T"),
    ]
    assert all(r.ok for r in replies), [r.text for r in replies]


async def test_direct_subscription(ctx: Context, gpg_world: GpgWorld) -> None:
    reply = await run(
        ctx,
        f"!invite .nl {ALICE} @alice:test.local Alice Jansen",
        body=gpg_world.export_public(ALICE),
    )
    assert reply.ok, reply.text
    fpr = gpg_world.fingerprint(ALICE)
    assert reply.text == (
        f"Alice Jansen <{ALICE}> subscribed directly as contact #1 of .nl (key {fpr})."
    )
    alice = ctx.store.members.by_email(ALICE)
    assert alice is not None and alice.matrix_id == "@alice:test.local"
    assert alice.channels == {Channel.EMAIL, Channel.MATRIX}
    (welcome,) = [e for e in reply.effects if isinstance(e, SendMail)]
    assert welcome.to == (ALICE,) and welcome.encrypt_to == (fpr,)
    assert InviteToRoom("@alice:test.local", Front.INCIDENT_ROOM) in reply.effects
    assert Announce("new member: Alice Jansen (.nl)") in reply.effects
    assert await ctx.keyring.key(fpr) is not None  # imported for the fan-out
    entry = ctx.store.audit.tail(1)[0]
    assert (entry.action, entry.target, entry.evidence_map["key"]) == (
        "member.add-direct",
        ALICE,
        fpr,
    )


async def test_direct_subscription_other_key_sources(ctx: Context, gpg_world: GpgWorld) -> None:
    await subscribe_three(ctx, gpg_world)
    bob, carol = ctx.store.members.by_email(BOB), ctx.store.members.by_email(CAROL)
    assert bob is not None and bob.name == "Bob Silva" and bob.rank == 2  # name from the key
    assert carol is not None and carol.tld == "br" and carol.name == "Carol T"


@pytest.mark.parametrize(
    ("line", "key_of", "problem"),
    [
        (f"!invite .nl {ALICE}", None, "give the key: paste or attach it"),
        ("!invite .nl expired@test.example", "expired@test.example", "the key has expired"),
        ("!invite .nl revoked@test.example", "revoked@test.example", "the key is revoked"),
        ("!invite .nl signonly@test.example", "signonly@test.example", "no usable encryption"),
        ("!invite .nl dave@test.example", ALICE, "no user id of the key carries dave@"),
        (f"!invite .nl {ALICE} @Alice:bad", ALICE, "not a Matrix user id"),
        (f"!invite .nl {ALICE} {'0' * 40}", ALICE, ", not the fingerprint 0000"),
    ],
)
async def test_direct_subscription_refusals(
    ctx: Context, gpg_world: GpgWorld, line: str, key_of: str | None, problem: str
) -> None:
    body = gpg_world.export_public(key_of) if key_of else ""
    reply = await run(ctx, line, body=body)
    assert not reply.ok
    assert problem in reply.text
    assert ctx.store.members.all() == []
    assert ctx.store.audit.entries() == []


async def test_secret_key_and_duplicates_and_the_three_contact_limit(
    ctx: Context, gpg_world: GpgWorld
) -> None:
    reply = await run(ctx, f"!invite .nl {ALICE}", body=gpg_world.export_secret(ALICE))
    assert "SECRET key" in reply.text
    await subscribe_three(ctx, gpg_world)
    again = await run(ctx, f"!invite .nl {ALICE}", body=gpg_world.export_public(ALICE))
    assert f"{ALICE} is already a member" in again.text
    await run(
        ctx, "!invite .nl dave@test.example", body=gpg_world.export_public("dave@test.example")
    )
    fourth = await run(
        ctx,
        "!invite .nl mallory@test.example",
        body=gpg_world.export_public("mallory@test.example"),
    )
    assert ".nl has 3 contacts already, the most allowed" in fourth.text


async def test_members_and_member(ctx: Context, gpg_world: GpgWorld) -> None:
    await subscribe_three(ctx, gpg_world)
    listing = (await run(ctx, "!members")).text.splitlines()
    assert len(listing) == 3
    assert re.fullmatch(
        rf"\.nl #1 Alice Jansen <{ALICE}> @alice:test.local email,matrix "
        rf"{gpg_world.fingerprint(ALICE)} \(key expires never\); last post never",
        listing[1] if listing[0].startswith(".br") else listing[0],
    )
    nl = (await run(ctx, "!members .nl")).text
    assert ALICE in nl and BOB in nl and CAROL not in nl
    assert (await run(ctx, "!members .jp")).text == "no members for .jp"
    one = (await run(ctx, "!member @alice:test.local")).text
    assert one.startswith(".nl #1 Alice Jansen")
    assert (await run(ctx, "!member nobody@test.example")).text == (
        "nobody@test.example is not on the roster"
    )


def _new_key_for(gpg_world: GpgWorld, email: str) -> str:
    """A second, fresh key carrying ``email`` (a member's replacement key)."""
    home = gpg_world.make_home([])
    no_pass = ("--passphrase", "", "--pinentry-mode", "loopback")
    gpg_world.gpg(
        home, *no_pass, "--quick-gen-key", f"New Key <{email}>", "ed25519", "sign", "never"
    )
    listing = gpg_world.gpg(home, "--with-colons", "--list-keys").stdout.decode()
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    gpg_world.gpg(home, *no_pass, "--quick-add-key", fpr, "cv25519", "encr", "never")
    return gpg_world.gpg(home, "--armor", "--export", fpr).stdout.decode()


async def test_key_show_refresh_and_replace(ctx: Context, gpg_world: GpgWorld) -> None:
    await subscribe_three(ctx, gpg_world)
    old = gpg_world.fingerprint(ALICE)
    shown = (await run(ctx, f"!key {ALICE}")).text
    assert shown.startswith(f"Alice Jansen (.nl) <{ALICE}>: {old} (key expires never)")
    same = await run(ctx, f"!key {ALICE}", body=gpg_world.export_public(ALICE))
    assert same.text == f"the key {old} of {ALICE} was refreshed"
    wrong = await run(ctx, f"!key {ALICE}", body=gpg_world.export_public(BOB))
    assert "no user id of the key carries alice@test.example" in wrong.text
    new_key = _new_key_for(gpg_world, ALICE)
    replaced = await run(ctx, f"!key {ALICE}", body=new_key)
    assert replaced.ok, replaced.text
    member = ctx.store.members.by_email(ALICE)
    assert member is not None and member.fingerprint != old
    entry = ctx.store.audit.tail(1)[0]
    assert entry.evidence_map["old_key"] == old
    assert entry.evidence_map["new_key"] == member.fingerprint
    assert (await run(ctx, "!key nobody@test.example")).text == (
        "nobody@test.example is not an active member"
    )


def _code(reply: Reply) -> str:
    found = re.search(r"!confirm ([A-Z0-9]{4}-[A-Z0-9]{4})", reply.text)
    assert found is not None, reply.text
    return found.group(1)


async def test_revoke_a_person_with_confirmation(ctx: Context, gpg_world: GpgWorld) -> None:
    await subscribe_three(ctx, gpg_world)
    asked = await run(ctx, "!revoke @alice:test.local left the registry")
    assert asked.text.startswith(f"This will revoke Alice Jansen (.nl) <{ALICE}>")
    assert ctx.store.members.by_email(ALICE).active  # type: ignore[union-attr]
    done = await run(ctx, f"!confirm {_code(asked)}")
    assert done.text == f"revoked: Alice Jansen (.nl) <{ALICE}>"
    assert RemoveFromRooms("@alice:test.local", "left the registry") in done.effects
    assert RotateRoomKeys(Front.INCIDENT_ROOM) in done.effects
    assert Announce("member removed: Alice Jansen (.nl)") in done.effects
    assert ctx.store.members.by_email(ALICE).status == "revoked"  # type: ignore[union-attr]
    assert ALICE not in {m.email for m in ctx.store.members.all()}  # out of the fan-out
    entry = ctx.store.audit.tail(1)[0]
    assert (entry.action, entry.target, entry.reason) == (
        "member.revoke",
        "@alice:test.local",
        "left the registry",
    )
    assert entry.evidence_map["confirmed"] == "yes"
    assert (await run(ctx, f"!revoke {ALICE} again")).text == (
        f"{ALICE} has no active member on the roster"
    )


async def test_revoke_a_cctld(ctx: Context, gpg_world: GpgWorld) -> None:
    await subscribe_three(ctx, gpg_world)
    done = await run(ctx, f"!confirm {_code(await run(ctx, '!revoke .nl registry withdrew'))}")
    assert done.ok, done.text
    assert {m.email for m in ctx.store.members.all()} == {CAROL}
    assert "missing" in (await run(ctx, "!revoke .br")).text  # the reason is required


async def test_leave_and_the_last_contact_warning(ctx: Context, gpg_world: GpgWorld) -> None:
    await subscribe_three(ctx, gpg_world)
    bob = ctx.store.members.by_email(BOB)
    assert bob is not None
    first = await run(ctx, "!leave", actor=member_actor(bob, Channel.EMAIL), front=Front.EMAIL)
    assert first.text == "You have left SECIR; you get no more list mail."
    assert NotifyAdmins(f"Bob Silva (.nl) <{BOB}> left the list.") in first.effects
    alice = ctx.store.members.by_email(ALICE)
    assert alice is not None
    last = await run(ctx, "!unsubscribe", actor=member_actor(alice), front=Front.INCIDENT_ROOM)
    assert RemoveFromRooms("@alice:test.local", "left the list") in last.effects
    assert any(
        isinstance(e, NotifyAdmins) and "WARNING: .nl has no contact left" in e.text
        for e in last.effects
    )
    assert {m.email for m in ctx.store.members.all()} == {CAROL}
    stale = await run(ctx, "!leave", actor=member_actor(bob, Channel.EMAIL), front=Front.EMAIL)
    assert stale.text == "you are not an active member"  # the handler checks the store again
    left = ctx.store.members.by_email(BOB)
    assert left is not None and left.status == "left"
    gone = await run(ctx, "!leave", actor=member_actor(left, Channel.EMAIL), front=Front.EMAIL)
    assert gone.text == "leave is for members of the list"  # by mail, no "!"
    in_control = await run(ctx, "!leave", actor=member_actor(ctx.store.members.by_email(CAROL)))  # type: ignore[arg-type]
    assert "not available in the control room" in in_control.text


async def test_deadletters_and_retry(ctx: Context) -> None:
    assert (await run(ctx, "!deadletters")).text == "no dead letters"
    ctx.store.outbox.enqueue(NewDelivery(Channel.EMAIL, "list", "post", b"x", ("a@test.example",)))
    row_id = ctx.store.outbox.pending(Channel.EMAIL)[0].id
    ctx.store.outbox.dead(row_id, "550 5.2.2 mailbox full")
    listing = (await run(ctx, "!deadletters")).text
    assert re.match(rf"{row_id}: email to list \(post\), 1 attempts, queued .*: 550 5.2.2", listing)
    retried = await run(ctx, f"!retry {row_id}")
    assert retried.text == f"delivery {row_id} to list is queued again"
    assert WakeOutbox() in retried.effects
    assert [r.id for r in ctx.store.outbox.pending(Channel.EMAIL)] == [row_id]
    assert (await run(ctx, f"!retry {row_id}")).text.startswith(f"there is no dead letter {row_id}")


async def test_devices_trust_and_block(ctx: Context) -> None:
    user = "@alice:test.local"
    assert (await run(ctx, f"!devices {user}")).text == f"the bot has seen no device of {user}"
    ctx.store.devices.record(user, "PHONE", "ed-key-1", "blocked")
    assert (await run(ctx, f"!devices {user}")).text.startswith("PHONE: blocked, ed25519 ed-key-1")
    trusted = await run(ctx, f"!trust {user} PHONE")
    assert trusted.text == f"device PHONE of {user} is trusted"
    assert TrustDevice(user, "PHONE") in trusted.effects
    assert ctx.store.devices.state(user, "PHONE") == ("trusted", "ed-key-1")
    blocked = await run(ctx, f"!block {user} PHONE")
    assert blocked.ok and ctx.store.devices.state(user, "PHONE") == ("blocked", "ed-key-1")
    assert "no device LAPTOP" in (await run(ctx, f"!trust {user} LAPTOP")).text
    assert [e.action for e in ctx.store.audit.entries()] == ["device.trust", "device.block"]


async def test_status_and_listkey(ctx: Context) -> None:
    assert (await run(ctx, "!listkey")).text.startswith("the store has no list key")
    ctx.list_fpr = await ctx.keyring.generate("SECIR list", "list@test.example")
    reply = await run(ctx, "!listkey")
    assert reply.text == f"The list key of list@test.example: {ctx.list_fpr} (attached)."
    (key,) = reply.attachments
    assert key.data.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    status = (await run(ctx, "!status")).text.splitlines()
    assert status[0] == "channels: not reported (no live status source)"
    assert "outbox: 0 pending, 0 dead letters, 0 sent" in status
    assert "last mail received: never" in status
    assert status[-1].startswith("the audit chain verifies")
