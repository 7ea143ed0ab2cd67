"""The dispatcher: the one place that lets a command run, or says precisely why not.

For every invocation, in this order: the command exists; it is offered on this front end;
the message was end-to-end encrypted; the sender holds the role (for admins: listed in the
config, holding the power level in the control room, and speaking from a device the bot
trusts); the arguments are there and valid. Then the handler runs. A :class:`Change` it
returns is applied in one store transaction together with its audit entry, after a
confirmation round (``!confirm <code>``) if the command declares one. A handler that crashes
gets the sender a reference to the log, never a traceback, and changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

from secir_bot import validate
from secir_bot.commands.base import (
    ALL_FRONTS,
    Actor,
    Arg,
    Args,
    Change,
    Command,
    Context,
    Front,
    Invocation,
    Kind,
    Refused,
    Reply,
    Role,
    refuse,
)
from secir_bot.commands.effects import dumps

log = logging.getLogger(__name__)


def convert(kind: Kind, text: str) -> object:
    """The value of one argument, or ``validate.Invalid`` saying what is wrong with it."""
    if kind is Kind.TLD:
        return validate.cctld_label(text)
    if kind is Kind.EMAIL:
        return validate.email(text)
    if kind is Kind.MXID:
        return validate.matrix_user_id(text)
    if kind in (Kind.PERSON, Kind.TLD_OR_PERSON):
        if text.startswith("@"):
            return validate.matrix_user_id(text)
        if "@" in text:
            return validate.email(text)
        if kind is Kind.TLD_OR_PERSON:
            return validate.cctld_label(text)
        raise validate.Invalid(f"give an email address or a Matrix id, not {text!r}")
    if kind in (Kind.CASE, Kind.NUMBER):
        digits = text.strip().removeprefix("#") if kind is Kind.CASE else text.strip()
        if not digits.isdigit() or int(digits) < 1 or len(digits) > 9:
            what = "a case number like #12" if kind is Kind.CASE else "a positive number"
            raise validate.Invalid(f"{text!r} is not {what}")
        return int(digits)
    if kind is Kind.FINGERPRINT:
        return validate.fingerprint(text)
    return validate.one_line(text, "the text" if kind is Kind.TEXT else "the word")


def parse_args(command: Command, words: tuple[str, ...]) -> tuple[Args | None, list[str]]:
    """Match words to the declared arguments; every problem is reported at once."""
    problems: list[str] = []
    values: dict[str, object] = {}
    specs: tuple[Arg, ...] = command.args
    rest = list(words)
    for arg in specs:
        if not rest:
            if not arg.optional:
                problems.append(f"<{arg.name}> is missing ({arg.help})")
            continue
        text = " ".join(rest) if arg.kind is Kind.TEXT else rest[0]
        rest = [] if arg.kind is Kind.TEXT else rest[1:]
        try:
            values[arg.name] = convert(arg.kind, text)
        except validate.Invalid as exc:
            problems.append(f"<{arg.name}>: {exc}")
    if rest:
        problems.append(f"too many arguments: {' '.join(rest)!r}")
    return (None if problems else Args(values)), problems


def spelled(name: str, front: Front) -> str:
    """A command as the asker writes it: ``!name`` in Matrix, the bare word by mail."""
    return name if front is Front.EMAIL else f"!{name}"


def _role_problem(command: Command, actor: Actor, front: Front) -> str | None:
    name = spelled(command.name, front)
    if command.role is Role.MEMBER and (actor.is_member or actor.is_admin):
        return None
    if command.role is Role.MEMBER and not actor.listed_admin:
        return f"{name} is for members of the list"
    # An admin command, or a listed admin who does not count as one right now.
    if not actor.listed_admin:
        return f"{name} is for the list's admins only"
    if not actor.power_ok:
        return (
            f"{name} needs the admin power level in the control room, "
            "which your account does not hold"
        )
    if not actor.device_trusted:
        return (
            f"{name} was sent from a device the bot does not trust; "
            "verify the device with the bot, or use a trusted one"
        )
    return None


class Dispatcher:
    """Runs invocations against one registry and one context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def handle(self, inv: Invocation) -> Reply:
        """Answer one invocation; never raises for anything the sender did."""
        command = self.ctx.registry.lookup(inv.name)
        if command is None:
            unknown, help_ = spelled(inv.name, inv.front), spelled("help", inv.front)
            return refuse(f"there is no command {unknown}; {help_} lists the commands")
        if inv.front not in command.fronts:
            where = ", ".join(sorted(command.fronts))
            name = spelled(command.name, inv.front)
            return refuse(f"{name} is not available in the {inv.front}; use: {where}")
        if not inv.encrypted:
            return refuse("commands are accepted only end-to-end encrypted; nothing was done")
        why = _role_problem(command, inv.actor, inv.front)
        if why is not None:
            log.warning("refused !%s from %s on %s: %s", command.name, inv.actor.id, inv.front, why)
            return refuse(why)
        if command is CONFIRM:
            return await self._confirm(inv)
        return await self._run(command, inv, confirmed_code=None)

    async def _run(self, command: Command, inv: Invocation, confirmed_code: str | None) -> Reply:
        args, problems = parse_args(command, inv.args)
        if args is None:
            usage = command.usage(inv.front)
            return refuse(f"usage: {usage}\n" + "\n".join(f"- {p}" for p in problems))
        try:
            result = await command.run(self.ctx, inv, args)
            if isinstance(result, Reply):
                return result
            if command.confirm and confirmed_code is None:
                return self._ask(command, inv, result)
            return self._apply(inv, result, confirmed_code)
        except Refused as exc:
            return refuse(str(exc))
        except Exception:
            ref = secrets.token_hex(4)
            log.exception(
                "command !%s from %s crashed (reference %s)", command.name, inv.actor.id, ref
            )
            return refuse(
                f"{spelled(command.name, inv.front)} failed because of an internal error "
                f"(reference {ref}); "
                "nothing was changed. The bot's log has the details under that reference."
            )

    def _apply(self, inv: Invocation, change: Change, code: str | None) -> Reply:
        return commit(self.ctx, inv.actor.id, change, ref=inv.ref, code=code, name=inv.name)

    def _ask(self, command: Command, inv: Invocation, change: Change) -> Reply:
        ttl = self.ctx.config.commands.confirm_ttl
        # Forget codes that expired a day ago: they can only be refused as unknown now.
        self.ctx.store.confirmations.purge(self.ctx.clock() - 86400)
        code = self.ctx.store.confirmations.create(
            actor=inv.actor.id,
            front=str(inv.front),
            command=command.name,
            args=inv.args,
            body=inv.body,
            now=self.ctx.clock(),
            ttl=ttl,
        )
        confirm = "confirm" if inv.front is Front.EMAIL else "!confirm"
        return Reply(
            f"{change.summary}\nTo go ahead, send {confirm} {code} within "
            f"{_duration(ttl)}. The code works once, for you only."
        )

    async def _confirm(self, inv: Invocation) -> Reply:
        if len(inv.args) != 1:
            return refuse(f"usage: {CONFIRM.usage(inv.front)}")
        code = inv.args[0]
        pending = self.ctx.store.confirmations.find(code)
        if pending is None:
            return refuse("that confirmation code is not known; check it, or run the command again")
        if pending.used_at is not None:
            return refuse("this confirmation code was already used")
        if pending.actor != inv.actor.id or pending.front != str(inv.front):
            return refuse("this confirmation code was given to someone else, or elsewhere")
        if pending.expires_at < self.ctx.clock():
            return refuse("this confirmation code has expired; run the command again")
        command = self.ctx.registry.lookup(pending.command)
        if command is None or not command.confirm:
            return refuse("the command this code confirms no longer exists")
        why = _role_problem(command, inv.actor, inv.front)
        if why is not None:
            return refuse(why)
        original = Invocation(
            name=command.name,
            args=pending.args,
            actor=inv.actor,
            front=inv.front,
            text=inv.text,
            body=pending.body,
            encrypted=inv.encrypted,
            ref=inv.ref,
        )
        reply = await self._run(command, original, confirmed_code=code)
        if not reply.ok:
            # The state changed since the code was given: spend it anyway, so a refusal
            # cannot be retried into a change the admin no longer sees.
            with self.ctx.store.transaction() as tx:
                self.ctx.store.confirmations.spend(tx, code, self.ctx.clock())
        return reply


def commit(
    ctx: Context,
    actor: str,
    change: Change,
    *,
    ref: str = "",
    code: str | None = None,
    name: str = "",
) -> Reply:
    """Apply ``change`` and append its audit entry in one transaction (and spend ``code``).

    Also the way in for changes that do not come from a command line (a nomination mail, a
    proof, a Matrix join, expiry), so that every change is audited the same way. The reply's
    effects are queued durably in the same transaction (``store.effects``); the returned
    reply names their queue ids in ``queued``.
    """
    now = ctx.clock()
    with ctx.store.transaction() as tx:
        if code is not None and not ctx.store.confirmations.spend(tx, code, now):
            raise Refused("this confirmation code was already used")
        reply = change.apply(tx)
        evidence = {**change.evidence, **reply.evidence}
        if ref:
            evidence.setdefault("ref", ref)
        if code is not None:
            evidence["confirmed"] = "yes"
        ctx.store.audit.append(
            tx,
            actor=actor,
            action=change.action,
            target=change.target,
            reason=change.reason,
            evidence=evidence,
            at=now,
        )
        queued = ctx.store.effects.record(
            tx,
            [dumps(e) for e in reply.effects],
            actor=actor,
            action=change.action,
            now=now,
        )
    log.info("%s by %s: %s %s", name or change.action, actor, change.action, change.target)
    return dataclasses.replace(reply, queued=tuple(queued))


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"


async def _never(ctx: Context, inv: Invocation, args: Args) -> Reply:
    raise AssertionError("the dispatcher handles !confirm itself")  # pragma: no cover


CONFIRM = Command(
    name="confirm",
    summary="confirm a command that asked for it",
    help=(
        "Some commands (such as !revoke) change something that is hard to undo, and answer "
        "with a code first. Send !confirm with that code to carry the command out. A code "
        "works once, only for the person who ran the command, in the same place, and only "
        "for a few minutes; it confirms exactly the command that gave it."
    ),
    role=Role.MEMBER,
    fronts=ALL_FRONTS,
    run=_never,
    args=(Arg("code", Kind.WORD, "the code the command gave you"),),
)

COMMANDS = (CONFIRM,)

__all__ = ["COMMANDS", "CONFIRM", "Dispatcher", "commit", "convert", "parse_args"]
