"""Joining: ``!invite`` (the D2 procedure or a direct subscription), ``!invite-via``,
``!approve``, ``!reject`` and ``!pending``.

The procedure itself is in ``subscription``; these handlers check the admin's input, call
it, and turn an approved case into members. Subscribing anyone sends the welcome mail
(encrypted to their key, with the list's public key), invites their Matrix account to the
incident room, and announces the new member on both channels: all as effects.
"""

from __future__ import annotations

import time

from secir_bot import cctld, validate
from secir_bot.cases import MAX_NOMINEES, CaseState
from secir_bot.commands import subscription
from secir_bot.commands.base import (
    ADMIN_FRONTS,
    Announce,
    Arg,
    Args,
    Attachment,
    Change,
    Command,
    Context,
    Effect,
    Front,
    InviteToRoom,
    Invocation,
    Kind,
    Refused,
    Reply,
    Role,
    SendMail,
    refuse,
)
from secir_bot.commands.parse import request_address
from secir_bot.keycheck import VettedKey, vet
from secir_bot.model import Channel
from secir_bot.store import Tx
from secir_bot.store.members import RosterConflict

# Any armoured key: a pasted secret key must reach the check that refuses it, not be ignored.
_KEY_BLOCK = "-----BEGIN PGP "


def _date(stamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(stamp))


def offered_key(inv: Invocation) -> str | None:
    """An armoured key attached to the command or pasted below it."""
    for attachment in inv.attachments:
        text = attachment.data.decode("utf-8", "replace")
        if _KEY_BLOCK in text:
            return text
    if _KEY_BLOCK in inv.body:
        return inv.body[inv.body.index(_KEY_BLOCK) :]
    return None


async def welcome(
    ctx: Context, *, name: str, email: str, fingerprint: str, matrix_id: str | None, tld: str
) -> list[Effect]:
    """The welcome mail and the room invitation for a new member."""
    lst = ctx.config.list
    attachments: tuple[Attachment, ...] = ()
    if ctx.list_fpr:
        key = await ctx.keyring.export_public(ctx.list_fpr)
        attachments = (Attachment("list-key.asc", "application/pgp-keys", key.encode()),)
    request = request_address(lst.address, ctx.config.commands.request_address)
    body = f"""Welcome to {lst.name}, {name}.

You are now an incident contact of {tld} on the secure channel of ccTLD operators.
Post by sending mail signed with your key {fingerprint} and encrypted to the list key
{ctx.list_fpr or "(attached)"} to {lst.address}.{
        " Your Matrix account " + matrix_id + " is invited to the incident room."
        if matrix_id
        else ""
    }
Commands (help, leave, ...) go by signed and encrypted mail to {request}, one per line;
"help" lists them. The operator manual explains everything else; the admins
({lst.owner}) send it with this mail or on request.
"""
    effects: list[Effect] = [
        SendMail(
            to=(email,),
            subject=f"[{lst.subject_tag}] Welcome to {lst.name}",
            body=body,
            encrypt_to=(fingerprint,),
            attachments=attachments,
            reply_to=request,
        )
    ]
    if matrix_id:
        effects.append(InviteToRoom(matrix_id, Front.INCIDENT_ROOM))
    return effects


# -- !invite ---------------------------------------------------------------------------------


def _split_more(text: str | None) -> tuple[str | None, str | None, str, list[str]]:
    """``[@mxid] [fingerprint] [name...]`` -> (mxid, fingerprint, name, problems)."""
    mxid = fpr = None
    words: list[str] = []
    problems: list[str] = []
    for word in (text or "").split():
        try:
            if word.startswith("@"):
                mxid = validate.matrix_user_id(word)
            elif len(word) == 40 and all(c in "0123456789abcdefABCDEF" for c in word):
                fpr = validate.fingerprint(word)
            else:
                words.append(word)
        except validate.Invalid as exc:
            problems.append(str(exc))
    return mxid, fpr, " ".join(words), problems


async def _invite(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    tld = args.tld("tld")
    email = args.opt_text("email")
    if email is None:
        return await subscription.start(ctx, inv.actor.id, tld)
    return await _direct(ctx, inv, tld, email, args.opt_text("more"))


async def _direct(
    ctx: Context, inv: Invocation, tld: cctld.CcTld, email: str, more: str | None
) -> Reply | Change:
    """``!invite .xx <email> [@mxid] [fingerprint] [name]`` with a key: no D2 round."""
    mxid, fpr, name, problems = _split_more(more)
    vetted: VettedKey | None = None
    if not problems:
        vetted, problems = await vet(
            email=email,
            armored=offered_key(inv),
            fingerprint=fpr,
            keyring_dir=ctx.config.commands.keyring,
        )
    contacts = [m for m in ctx.store.members.all() if m.tld == tld.a_label]
    if len(contacts) >= MAX_NOMINEES:
        problems.append(f"{tld.display} has {len(contacts)} contacts already, the most allowed")
    if ctx.store.members.by_email(email):
        problems.append(f"{email} is already a member")
    if mxid and ctx.store.members.by_matrix_id(mxid):
        problems.append(f"{mxid} is already a member")
    if vetted and ctx.store.members.by_fingerprint(vetted.fingerprint):
        problems.append(f"key {vetted.fingerprint} is registered for another member")
    if problems or vetted is None:
        return refuse(f"{email} was not subscribed:\n- " + "\n- ".join(problems))
    name = name or vetted.name or email
    await ctx.keyring.import_key(vetted.armored)
    effects = await welcome(
        ctx, name=name, email=email, fingerprint=vetted.fingerprint, matrix_id=mxid, tld=tld.display
    )
    rank = len(contacts) + 1

    def apply(tx: Tx) -> Reply:
        try:
            ctx.store.members.insert(
                tx,
                tld=tld.a_label,
                tld_display=tld.display,
                name=name,
                email=email,
                fingerprint=vetted.fingerprint,
                matrix_id=mxid,
                channels=frozenset({Channel.EMAIL, Channel.MATRIX} if mxid else {Channel.EMAIL}),
                rank=rank,
            )
        except RosterConflict as exc:
            raise Refused(str(exc)) from None
        return Reply(
            f"{name} <{email}> subscribed directly as contact #{rank} of {tld.display} "
            f"(key {vetted.fingerprint}).",
            effects=(*effects, Announce(f"new member: {name} ({tld.display})")),
        )

    return Change(
        "member.add-direct",
        email,
        f"This will subscribe {email} for {tld.display} without the D2 procedure.",
        apply,
        reason="verified out of band by the admin",
        evidence={"key": vetted.fingerprint, "tld": tld.display},
    )


async def _invite_via(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    return await subscription.start(
        ctx, inv.actor.id, args.tld("tld"), override=(args.text("email"), args.text("reason"))
    )


# -- !approve, !reject, !pending -------------------------------------------------------------


async def _approve(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    case = ctx.store.cases.get(args.number("case"))
    if case is None:
        return refuse(f"there is no case #{args.number('case')}")
    if case.state is not CaseState.READY:
        return refuse(f"case {case.label} is {case.state}; it waits for {case.waiting_for()}")
    if case.expires_at < ctx.clock():
        return refuse(f"case {case.label} expired on {_date(case.expires_at)}")
    tld = cctld.lookup(case.tld)
    problems: list[str] = []
    effects: list[Effect] = []
    for n in case.nominees:  # keys may have expired or been revoked since the nomination
        vetted, why = await vet(email=n.email, armored=n.key, fingerprint=n.fingerprint,
                                keyring_dir=None)  # fmt: skip
        problems.extend(f"{n.name}: {p}" for p in why)
        if vetted is not None:
            await ctx.keyring.import_key(vetted.armored)
            effects += await welcome(
                ctx,
                name=n.name,
                email=n.email,
                fingerprint=n.fingerprint,
                matrix_id=n.matrix_id,
                tld=tld.display,
            )
    if problems:
        return refuse(f"case {case.label} cannot be approved:\n- " + "\n- ".join(problems))
    taken = len([m for m in ctx.store.members.all() if m.tld == tld.a_label])
    names = ", ".join(n.name for n in case.nominees)

    def apply(tx: Tx) -> Reply:
        ctx.store.cases.move(tx, case, CaseState.APPROVED, ctx.clock(), by=inv.actor.id)
        for n in case.nominees:
            try:
                ctx.store.members.insert(
                    tx,
                    tld=tld.a_label,
                    tld_display=tld.display,
                    name=n.name,
                    email=n.email,
                    fingerprint=n.fingerprint,
                    matrix_id=n.matrix_id,
                    channels=frozenset(
                        {Channel.EMAIL, Channel.MATRIX} if n.matrix_id else {Channel.EMAIL}
                    ),
                    rank=min(taken + n.position, MAX_NOMINEES),
                )
            except RosterConflict as exc:
                raise Refused(f"case {case.label} cannot be approved: {exc}") from None
        return Reply(
            f"case {case.label} approved: {names} subscribed for {tld.display}.",
            effects=(*effects, Announce(f"new member: {tld.display} ({names})")),
        )

    return Change(
        "case.approve",
        f"{case.label} {tld.display}",
        f"This will subscribe {names} for {tld.display}.",
        apply,
        evidence={"keys": ",".join(n.fingerprint for n in case.nominees)},
    )


async def _reject(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    case = ctx.store.cases.get(args.number("case"))
    if case is None:
        return refuse(f"there is no case #{args.number('case')}")
    if not case.open:
        return refuse(f"case {case.label} is closed already ({case.state})")
    reason = args.text("reason")

    def apply(tx: Tx) -> Reply:
        ctx.store.cases.move(
            tx, case, CaseState.REJECTED, ctx.clock(), by=inv.actor.id, reason=reason
        )
        return Reply(f"case {case.label} (.{case.tld}) rejected: {reason}")

    return Change("case.reject", f"{case.label} .{case.tld}", "", apply, reason=reason)


async def _pending(ctx: Context, inv: Invocation, args: Args) -> Reply:
    cases = ctx.store.cases.open_cases()
    if not cases:
        return Reply("no open cases")
    lines = []
    for case in cases:
        via = "whois" if case.contact_source == "whois" else f"override: {case.override_reason}"
        lines.append(
            f"{case.label} {cctld.lookup(case.tld).display} {case.state} since "
            f"{_date(case.opened_at)} (by {case.opened_by}; contact {case.contact_email}, "
            f"{via}); waits for {case.waiting_for()}; expires {_date(case.expires_at)}"
        )
    return Reply("\n".join(lines))


def _admin(name: str, summary: str, text: str, run: object, *args: Arg, **kw: object) -> Command:
    return Command(name, summary, text, Role.ADMIN, ADMIN_FRONTS, run, args, **kw)  # type: ignore[arg-type]


COMMANDS = (
    _admin(
        "invite",
        "invite a ccTLD (D2 procedure), or subscribe a verified person directly",
        "With only a ccTLD (!invite .nl), starts the subscription procedure: the bot looks up "
        "the ccTLD's administrative contact in IANA's root zone database over whois and mails "
        "it a one-time code and instructions; the contact names up to three people, each "
        "proves control of their key (and Matrix account), and an admin runs !approve. With "
        "an email address, subscribes that person at once, for people verified out of band: "
        "attach or paste their public key below the command, or give its fingerprint to take "
        "it from the admins' keyring (commands.keyring). The key is checked as for any member.",
        _invite,
        Arg("tld", Kind.TLD, "the ccTLD, like .nl or .рф"),
        Arg("email", Kind.EMAIL, "for a direct subscription: the person's address", True),
        Arg("more", Kind.TEXT, "[@matrix-id] [fingerprint] [name]", True),
    ),
    _admin(
        "invite-via",
        "start the D2 procedure with an address you give instead of IANA's",
        "Like !invite .xx, but the invitation goes to the address you give instead of the "
        "administrative contact found in IANA's records (when whois is down, or IANA's record "
        "is out of date). The reason is required and recorded in the audit log.",
        _invite_via,
        Arg("tld", Kind.TLD, "the ccTLD"),
        Arg("email", Kind.EMAIL, "the address to send the invitation to"),
        Arg("reason", Kind.TEXT, "why IANA's address is not used"),
    ),
    _admin(
        "approve",
        "subscribe the nominees of a ready case",
        "Subscribes every nominee of the case (which must be ready: each proved their key and "
        "Matrix account), mails each the welcome with the list key, invites their Matrix "
        "accounts to the incident room and announces the new member on both channels.",
        _approve,
        Arg("case", Kind.CASE, "the case number, like #12 (see !pending)"),
    ),
    _admin(
        "reject",
        "close a case without subscribing anyone",
        "Closes an open case; the reason is recorded in the audit log.",
        _reject,
        Arg("case", Kind.CASE, "the case number"),
        Arg("reason", Kind.TEXT, "why"),
    ),
    _admin(
        "pending",
        "list the open subscription cases and what each waits for",
        "Shows every open case: its ccTLD, state, who opened it, the contact the invitation "
        "went to (and whether from whois or an override), what it waits for, and when it "
        "expires.",
        _pending,
    ),
)
