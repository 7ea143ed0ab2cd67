"""The subscription procedure (D2): opening a case, the nomination, the proofs, expiry.

The steps that are commands (``!invite``, ``!approve``, ``!reject``, ``!pending``) live in
``commands/membership.py`` and call :func:`start`; the steps that arrive as mail or as a
Matrix event (the administrative contact's nomination, a nominee's signed proof, a nominee
joining the bot's chat, and expiry) are the functions below, for the front ends to call.
Every step validates completely first, changes nothing on any problem, and commits its
change with an audit entry (``dispatch.commit``). Mail to send and invitations to make come
back as effects.
"""

from __future__ import annotations

import time

from secir_bot import whois
from secir_bot.cases import (
    CHALLENGE_PATTERN,
    CODE_PATTERN,
    MAX_NOMINEES,
    Case,
    CaseState,
    new_challenge,
    new_code,
)
from secir_bot.cctld import CcTld
from secir_bot.commands.base import (
    Change,
    Context,
    Effect,
    Front,
    InviteToRoom,
    NotifyAdmins,
    Refused,
    Reply,
    SendMail,
    refuse,
)
from secir_bot.commands.dispatch import commit
from secir_bot.commands.parse import request_address
from secir_bot.keycheck import vet
from secir_bot.nomination import NomineeForm, parse
from secir_bot.store import Tx
from secir_bot.store.audit import SYSTEM_ACTOR
from secir_bot.store.cases import CaseConflict


def _date(stamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(stamp))


def _request(ctx: Context) -> str:
    return request_address(ctx.config.list.address, ctx.config.commands.request_address)


def _target(case: Case | None, tld: str) -> str:
    return f"{case.label} .{tld}" if case else f".{tld}"


def invitation(ctx: Context, case_id: int, tld: CcTld, to: str, code: str, expires: float) -> str:
    lst = ctx.config.list
    return f"""Dear administrative contact of {tld.display},

{lst.name} is the secure incident-response channel of ccTLD operators: an end-to-end
encrypted Matrix room mirrored with a PGP-encrypted mailing list ({lst.address}). Its admins
invite {tld.display} to take part. We write to {to} because IANA's root zone
database lists it as the administrative contact of {tld.display} (or because an admin of the
channel named it, with a reason they recorded).

If {tld.display} wants to take part, answer this mail - from {to}, or from your own
address with {to} in Cc - naming up to {MAX_NOMINEES} people who may represent
{tld.display}, the primary contact first. Keep the code line; repeat the block per person:

code: {code}

name: Full Name
email: person@your-registry
phone: +CC number (international form; required for the first person)
fingerprint: the full fingerprint of their OpenPGP v4 key (or paste the public key)
matrix: @name:server (optional)
timezone: Europe/Amsterdam (optional)
languages: en (optional, the ones they read)

Each person then gets a challenge encrypted to their key and answers it with a signed
mail; a Matrix account is asked to accept an invitation from the bot. An admin of the
channel then approves the subscription.

The code works once and expires on {_date(expires)} (case #{case_id}). If you did not
expect this mail, ignore it or write to {lst.owner}.
"""


async def start(
    ctx: Context, actor: str, tld: CcTld, override: tuple[str, str] | None = None
) -> Reply | Change:
    """``!invite .xx`` (or with ``override`` = (address, reason), ``!invite-via``)."""
    existing = ctx.store.cases.open_for(tld.a_label)
    if existing is not None:
        return refuse(
            f"case {existing.label} for {tld.display} is open already; it waits for "
            f"{existing.waiting_for()}"
        )
    active = [m for m in ctx.store.members.all() if m.tld == tld.a_label]
    if len(active) >= MAX_NOMINEES:
        return refuse(f"{tld.display} has {len(active)} contacts already, the most allowed")
    evidence: dict[str, str] = {}
    if override is None:
        try:
            record = await whois.admin_contact(ctx.whois, tld.a_label)
        except whois.WhoisError as exc:
            return refuse(
                f"cannot invite {tld.display}: {exc}. Nothing was sent. Try again later, or "
                f"use !invite-via {tld.display} <address> <reason> to name the address yourself."
            )
        if not record.delegated:
            return refuse(f"IANA lists {tld.display} as {record.status}, not as delegated")
        contact, org, reason, sha = record.admin.email, record.organisation, "", record.sha256
        evidence = {"whois_sha256": sha, "whois_server": ctx.whois.name}
    else:
        (contact, reason), org, sha = override, "", None
        evidence = {"override": contact}
    code = new_code()
    now = ctx.clock()
    expires = now + ctx.config.commands.case_expiry_days * 86400

    def apply(tx: Tx) -> Reply:
        try:
            case_id = ctx.store.cases.open_case(
                tx,
                tld=tld.a_label,
                contact_email=contact,
                contact_org=org,
                contact_source="override" if override else "whois",
                override_reason=reason or None,
                whois_sha256=sha,
                code=code,
                opened_by=actor,
                now=now,
                expires_at=expires,
            )
        except CaseConflict as exc:
            raise Refused(str(exc)) from None
        mail = SendMail(
            to=(contact,),
            subject=f"[{ctx.config.list.subject_tag}] {tld.display}: please nominate your "
            f"incident contacts (case #{case_id})",
            body=invitation(ctx, case_id, tld, contact, code, expires),
            reply_to=_request(ctx),
        )
        source = (
            f"the address {contact} named by {actor}"
            if override
            else (f"IANA's administrative contact {contact}{f' ({org})' if org else ''}")
        )
        return Reply(
            f"Case #{case_id} opened for {tld.display}: the invitation with a one-time code "
            f"goes to {source}. It waits for their nomination and expires on {_date(expires)}.",
            effects=(mail,),
            evidence={"case": f"#{case_id}"},
        )

    return Change(
        action="case.invite-via" if override else "case.invite",
        target=tld.display,
        summary=f"This will invite {tld.display} through {contact}.",
        apply=apply,
        reason=reason,
        evidence=evidence,
    )


async def _vet_all(ctx: Context, forms: tuple[NomineeForm, ...]) -> list[str]:
    """Fetch and check every nominee's key, filling in ``form.key`` and ``fingerprint``."""
    problems: list[str] = []
    for form in forms:
        vetted, why = await vet(
            email=form.email,
            armored=form.key,
            fingerprint=form.fingerprint,
            keyring_dir=ctx.config.commands.keyring,
        )
        problems.extend(f"nominee {form.position}: {p}" for p in why)
        if vetted is not None:
            form.key, form.fingerprint = vetted.armored, vetted.fingerprint
            if ctx.store.members.by_fingerprint(vetted.fingerprint):
                problems.append(f"nominee {form.position}: key {vetted.fingerprint} is taken")
        if form.email and ctx.store.members.by_email(form.email):
            problems.append(f"nominee {form.position}: {form.email} is already a member")
        if form.matrix_id and ctx.store.members.by_matrix_id(form.matrix_id):
            problems.append(f"nominee {form.position}: {form.matrix_id} is already a member")
    return problems


async def nomination_received(
    ctx: Context, *, sender: str, cc: tuple[str, ...], body: str, ref: str
) -> Reply:
    """The administrative contact's answer, with the code and the nominees."""
    nomination = parse(body)
    if nomination.code is None:
        return refuse("Nothing was changed: " + "; ".join(nomination.problems))
    case = ctx.store.cases.by_code(nomination.code)
    if case is None:
        return refuse("this code is not known; answer the invitation mail, keeping its code")
    if case.state is CaseState.EXPIRED or case.expires_at < ctx.clock():
        return refuse(f"this code expired on {_date(case.expires_at)}; ask the admins again")
    if case.state is not CaseState.INVITED:
        return refuse(f"this code was already used (case {case.label} is {case.state})")
    contact = case.contact_email.lower()
    if sender.lower() != contact and contact not in {c.lower() for c in cc}:
        return refuse(f"the nomination must come from {contact}, or have it in Cc")
    problems = list(nomination.problems) or await _vet_all(ctx, nomination.nominees)
    if problems:
        return refuse("Nothing was changed; please fix and send again:\n- " + "\n- ".join(problems))
    for form in nomination.nominees:  # so that their signed proofs can be verified
        assert form.key is not None
        await ctx.keyring.import_key(form.key)
    challenges = {form.position: new_challenge() for form in nomination.nominees}
    tld = case.tld

    def apply(tx: Tx) -> Reply:
        for form in nomination.nominees:
            ctx.store.cases.add_nominee(tx, case.id, form, challenges[form.position])
        ctx.store.cases.move(tx, case, CaseState.NOMINATED, ctx.clock(), ref=ref)
        effects: list[Effect] = []
        for form in nomination.nominees:
            assert form.fingerprint is not None
            effects.append(_challenge_mail(ctx, case, form, challenges[form.position]))
            if form.matrix_id:
                effects.append(InviteToRoom(form.matrix_id, Front.DIRECT))
        names = ", ".join(f"{f.name} <{f.email}>" for f in nomination.nominees)
        effects.append(NotifyAdmins(f"case {case.label} (.{tld}): nominated {names}"))
        return Reply(
            f"Thank you: {len(nomination.nominees)} nominee(s) recorded for case {case.label}. "
            "Each gets a challenge to answer with a signed mail.",
            effects=tuple(effects),
            evidence={"fingerprints": ",".join(f.fingerprint or "" for f in nomination.nominees)},
        )

    return _commit(ctx, sender, Change("case.nominate", _target(case, tld), "", apply), ref)


def _challenge_mail(ctx: Context, case: Case, form: NomineeForm, challenge: str) -> SendMail:
    assert form.fingerprint is not None
    lst = ctx.config.list
    body = f"""Hello {form.name},

{case.contact_email} (the administrative contact of .{case.tld}) has nominated you as
incident contact #{form.position} of .{case.tld} on {lst.name} ({lst.address}).

To show that you control the key {form.fingerprint}, answer this mail with a mail
SIGNED with that key that contains this line:

{challenge}

Quoting this mail is fine; the line is what counts. {
        "Your Matrix account "
        + form.matrix_id
        + " also gets an invitation from the bot: accept it. "
        if form.matrix_id
        else ""
    }If you did not
expect this, tell the admins at {lst.owner}.
"""
    return SendMail(
        to=(form.email,),
        subject=f"[{lst.subject_tag}] .{case.tld}: please confirm your key (case {case.label})",
        body=body,
        encrypt_to=(form.fingerprint,),
        reply_to=_request(ctx),
    )


def _commit(ctx: Context, actor: str, change: Change, ref: str) -> Reply:
    try:
        return commit(ctx, actor, change, ref=ref)
    except (Refused, CaseConflict) as exc:
        return refuse(str(exc))


def _ready_notice(case: Case) -> NotifyAdmins:
    return NotifyAdmins(
        f"case {case.label} (.{case.tld}) is ready: every nominee proved their key"
        f" and Matrix account. Review it, then !approve {case.id} or !reject {case.id} <reason>."
    )


def proof_received(ctx: Context, *, signer: str | None, text: str, ref: str) -> Reply:
    """A nominee's signed answer to their challenge (``signer``: the verified signer)."""
    challenges = set(CHALLENGE_PATTERN.findall(text.upper()))
    if not challenges:
        return refuse("no challenge line (SECIR-PROOF-...) found in the answer")
    if len(challenges) > 1:
        return refuse("answer each challenge in its own mail")
    found = ctx.store.cases.nominee_by_challenge(challenges.pop())
    if found is None:
        return refuse("this challenge is not known, or was answered already")
    case, nominee = found
    if signer is None:
        return refuse(f"the answer must be signed with the key {nominee.fingerprint}")
    if signer.upper() != nominee.fingerprint:
        return refuse(
            f"the answer is signed by the key {signer.upper()}, but the challenge was sent to "
            f"the key {nominee.fingerprint}; nothing was changed"
        )
    if not case.open or case.expires_at < ctx.clock():
        return refuse(f"case {case.label} is closed ({case.state}); nothing was changed")

    def apply(tx: Tx) -> Reply:
        ctx.store.cases.prove_key(tx, nominee.id, ctx.clock(), ref)
        return _after_progress(ctx, tx, case, f"Thank you, {nominee.name}: your key is confirmed.")

    change = Change("case.proof", _target(case, case.tld), "", apply, evidence={"key": signer})
    return _commit(ctx, signer, change, ref)


def _after_progress(ctx: Context, tx: Tx, case: Case, text: str) -> Reply:
    updated = ctx.store.cases.get(case.id, tx)
    assert updated is not None
    if updated.state is CaseState.NOMINATED and updated.state_after_proofs() is CaseState.READY:
        ctx.store.cases.move(tx, updated, CaseState.READY, ctx.clock())
        return Reply(text, effects=(_ready_notice(updated),))
    return Reply(text)


def matrix_joined(ctx: Context, user_id: str, ref: str) -> list[Reply]:
    """A nominee's Matrix account accepted the bot's invitation."""
    replies = []
    for case in ctx.store.cases.nominees_with_matrix_id(user_id):
        if case.expires_at < ctx.clock():
            continue
        for nominee in case.nominees:
            if nominee.matrix_id != user_id or nominee.matrix_joined_at is not None:
                continue

            def apply(tx: Tx, case: Case = case, nid: int = nominee.id) -> Reply:
                ctx.store.cases.matrix_joined(tx, nid, ctx.clock())
                return _after_progress(ctx, tx, case, f"Thank you: {user_id} is confirmed.")

            change = Change("case.matrix-joined", _target(case, case.tld), "", apply)
            replies.append(_commit(ctx, user_id, change, ref))
    return replies


def expire_due(ctx: Context) -> list[Reply]:
    """Close every open case past its expiry (run now and then by the app)."""
    now = ctx.clock()
    replies = []
    for case in ctx.store.cases.open_cases():
        if case.expires_at >= now:
            continue

        def apply(tx: Tx, case: Case = case) -> Reply:
            ctx.store.cases.move(
                tx, case, CaseState.EXPIRED, now, by=SYSTEM_ACTOR, reason="expired"
            )
            text = f"case {case.label} (.{case.tld}) expired; it waited for {case.waiting_for()}"
            return Reply(text, effects=(NotifyAdmins(text),))

        change = Change("case.expire", _target(case, case.tld), "", apply, reason="expired")
        replies.append(_commit(ctx, SYSTEM_ACTOR, change, ""))
    return replies


def kind_of_request(text: str) -> str:
    """What a mail to the request address is: "nomination", "proof" or "commands".

    The procedure's answers come to the same address as command mail: a nomination carries
    the invitation's ``code:`` line, a proof a challenge line; anything else is read as
    commands.
    """
    if CHALLENGE_PATTERN.search(text.upper()):
        return "proof"
    if any(
        line.strip().lower().startswith("code:") and CODE_PATTERN.search(line.upper())
        for line in text.splitlines()
        if not line.startswith(">")
    ):
        return "nomination"
    return "commands"
