"""The roster: ``!members``, ``!member``, ``!key``, ``!revoke`` (admins) and ``!leave`` (members).

Removing someone (revocation or leaving) takes effect in the store at once: from the commit
on, their mail and room messages are refused and the email fan-out skips them. The effects
ask the Matrix front end to remove them from the rooms and to start a new room key, so that
they decrypt no later message on either channel.
"""

from __future__ import annotations

import time

from secir_bot.cctld import CcTld
from secir_bot.commands.account import set_key, take_new_key
from secir_bot.commands.base import (
    ADMIN_FRONTS,
    MEMBER_FRONTS,
    Announce,
    Arg,
    Args,
    Change,
    Command,
    Context,
    Effect,
    Front,
    Invocation,
    Kind,
    NotifyAdmins,
    Refused,
    RemoveFromRooms,
    Reply,
    Role,
    RotateRoomKeys,
    refuse,
)
from secir_bot.commands.membership import offered_key
from secir_bot.crypto import KeyInfo
from secir_bot.model import Member
from secir_bot.store import Tx


def _date(stamp: float | None, never: str = "never") -> str:
    return never if stamp is None else time.strftime("%Y-%m-%d", time.gmtime(stamp))


def _find(ctx: Context, who: object) -> list[Member]:
    everyone = ctx.store.members.all(active_only=False)
    if isinstance(who, CcTld):
        return [m for m in everyone if m.tld == who.a_label]
    assert isinstance(who, str)
    if who.startswith("@"):
        return [m for m in everyone if m.matrix_id == who]
    return [m for m in everyone if m.email == who.lower()]


def _key_text(info: KeyInfo | None) -> str:
    if info is None:
        return "key missing from the list keyring"
    if info.revoked:
        return "key REVOKED"
    if info.expired:
        return f"key EXPIRED {_date(info.expires)}"
    return f"key expires {_date(info.expires)}"


async def _describe(ctx: Context, members: list[Member]) -> list[str]:
    infos = {k.fingerprint: k for k in await ctx.keyring.keys([m.fingerprint for m in members])}
    lines = []
    for m in members:
        status = "" if m.active else f" [{m.status}]"
        lines.append(
            f"{m.tld_display} #{m.rank} {m.name} <{m.email}> {m.matrix_id or '-'} "
            f"{','.join(sorted(m.channels))} {m.fingerprint} "
            f"({_key_text(infos.get(m.fingerprint))}); last post "
            f"{_date(ctx.store.posts.last_by(m.id))}{status}"
        )
    return lines


async def _members(ctx: Context, inv: Invocation, args: Args) -> Reply:
    tld = args.get("tld")
    members = ctx.store.members.all(active_only=tld is None)
    if isinstance(tld, CcTld):
        members = [m for m in members if m.tld == tld.a_label]
    if not members:
        return Reply("no members" + (f" for {tld.display}" if isinstance(tld, CcTld) else ""))
    return Reply("\n".join(await _describe(ctx, members)))


async def _member(ctx: Context, inv: Invocation, args: Args) -> Reply:
    found = _find(ctx, args.text("person"))
    if not found:
        return refuse(f"{args.text('person')} is not on the roster")
    return Reply("\n".join(await _describe(ctx, found)))


def _removal_effects(removed: list[Member], reason: str) -> list[Effect]:
    effects: list[Effect] = [
        RemoveFromRooms(m.matrix_id, reason) for m in removed if m.matrix_id is not None
    ]
    effects.append(RotateRoomKeys(Front.INCIDENT_ROOM))
    return effects


async def _revoke(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    who = args.get("who")
    reason = args.text("reason")
    found = [m for m in _find(ctx, who) if m.active]
    shown = who.display if isinstance(who, CcTld) else str(who)
    if not found:
        return refuse(f"{shown} has no active member on the roster")
    labels = ", ".join(f"{m.label} <{m.email}>" for m in found)

    def apply(tx: Tx) -> Reply:
        if ctx.store.members.set_status(tx, [m.id for m in found], "revoked") != len(found):
            raise Refused("the roster changed meanwhile; look at !members again")
        effects = _removal_effects(found, reason)
        effects.append(Announce(f"member removed: {', '.join(m.label for m in found)}"))
        return Reply(f"revoked: {labels}", effects=tuple(effects))

    return Change(
        "member.revoke",
        shown,
        f"This will revoke {labels}: no more list mail, removal from the rooms, a new room key.",
        apply,
        reason=reason,
        evidence={"keys": ",".join(m.fingerprint for m in found)},
    )


async def _key(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    email = args.text("email")
    member = ctx.store.members.by_email(email)
    if member is None or not member.active:
        return refuse(f"{email} is not an active member")
    armored = offered_key(inv)
    if armored is None:
        info = await ctx.keyring.key(member.fingerprint)
        uids = "; ".join(info.uids) if info else "-"
        return Reply(f"{member.label} <{email}>: {member.fingerprint} ({_key_text(info)}); {uids}")
    key = await take_new_key(ctx, member, armored)
    if key.problems:
        return refuse(f"the new key for {email} was not accepted:\n- " + "\n- ".join(key.problems))
    if key.same:
        return Reply(f"the key {member.fingerprint} of {email} was refreshed")
    if key.taken:
        return refuse(f"key {key.fingerprint} is registered for another member")

    def apply(tx: Tx) -> Reply:
        set_key(ctx, tx, member, key.fingerprint)
        return Reply(f"{email} now uses the key {key.fingerprint}")

    return Change(
        "member.key",
        email,
        "",
        apply,
        evidence={"old_key": member.fingerprint, "new_key": key.fingerprint},
    )


async def _leave(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    member = inv.actor.member
    if member is None or not member.active:
        return refuse("you are not an active member")
    others = [m for m in ctx.store.members.all() if m.tld == member.tld and m.id != member.id]

    def apply(tx: Tx) -> Reply:
        if ctx.store.members.set_status(tx, [member.id], "left") != 1:
            raise Refused("you are not an active member")
        effects = _removal_effects([member], "left the list")
        effects.append(Announce(f"member left: {member.label}"))
        warning = "" if others else f" WARNING: {member.tld_display} has no contact left."
        effects.append(NotifyAdmins(f"{member.label} <{member.email}> left the list.{warning}"))
        return Reply(
            f"You have left {ctx.config.list.name}; you get no more list mail.",
            effects=tuple(effects),
        )

    return Change("member.leave", member.email, "", apply, evidence={"key": member.fingerprint})


COMMANDS = (
    Command(
        "members",
        "list the roster, or one ccTLD's contacts",
        "Lists the active members (or, with a ccTLD, every member of it, with their status): "
        "ccTLD, rank, name, email, Matrix id, channels, key fingerprint and expiry, and the "
        "date of their last post.",
        Role.ADMIN,
        ADMIN_FRONTS,
        _members,
        (Arg("tld", Kind.TLD, "only this ccTLD", optional=True),),
    ),
    Command(
        "member",
        "show one member",
        "Shows one person on the roster, found by email address or Matrix id, whatever "
        "their status.",
        Role.ADMIN,
        ADMIN_FRONTS,
        _member,
        (Arg("person", Kind.PERSON, "an email address or a Matrix id"),),
    ),
    Command(
        "key",
        "show a member's key, or replace it with an attached one",
        "Without a key, shows the member's key: fingerprint, expiry, user ids. With a public "
        "key attached or pasted below the command, checks it (v4, usable, carrying the "
        "member's address) and makes it the member's key; the change is audited.",
        Role.ADMIN,
        ADMIN_FRONTS,
        _key,
        (Arg("email", Kind.EMAIL, "the member's address"),),
    ),
    Command(
        "revoke",
        "remove a ccTLD's members, or one person, at once",
        "Revokes every member of a ccTLD (!revoke .nl <reason>) or one person (by email or "
        "Matrix id): from the commit on they get no list mail and their messages are refused; "
        "they are removed from the rooms, the room key is renewed so they cannot read later "
        "messages, and the list is told. Asks for confirmation.",
        Role.ADMIN,
        ADMIN_FRONTS,
        _revoke,
        (
            Arg("who", Kind.TLD_OR_PERSON, "a ccTLD, an email address or a Matrix id"),
            Arg("reason", Kind.TEXT, "why (kept in the audit log)"),
        ),
        confirm=True,
    ),
    Command(
        "leave",
        "leave the list",
        "Removes you from the list at once: no more list mail, removal from the rooms. The "
        "admins are told (and warned if your ccTLD has no other contact). By mail, the "
        "command 'unsubscribe' does the same.",
        Role.MEMBER,
        MEMBER_FRONTS,
        _leave,
        aliases=("unsubscribe",),
    ),
)
