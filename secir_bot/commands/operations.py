"""Operations the core used to leave to the shell: ``!deadletters``, ``!retry``, ``!devices``,
``!trust``, ``!block``, ``!status`` and ``!listkey``.

Pure store and crypto work; what only the running bot knows (which channels are up) comes
from the ``StatusSource`` the app wires in, and a device's keys are re-pinned by the Matrix
front end (the ``TrustDevice`` effect).
"""

from __future__ import annotations

import time

from secir_bot.commands.base import (
    ADMIN_FRONTS,
    Arg,
    Args,
    Attachment,
    Change,
    Command,
    Context,
    Invocation,
    Kind,
    Refused,
    Reply,
    Role,
    TrustDevice,
    WakeOutbox,
    refuse,
)
from secir_bot.store import Tx


def _when(stamp: float | None) -> str:
    return "never" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stamp))


async def _deadletters(ctx: Context, inv: Invocation, args: Args) -> Reply:
    dead = ctx.store.outbox.dead_letters()
    if not dead:
        return Reply("no dead letters")
    return Reply(
        "\n".join(
            f"{d.id}: {d.channel} to {d.target} ({d.kind}), {d.attempts} attempts, queued "
            f"{_when(d.created_at)}: {d.last_error[:200]}"
            for d in dead
        )
    )


async def _retry(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    row_id = args.number("id")
    dead = ctx.store.outbox.dead_letter(row_id)
    if dead is None:
        return refuse(f"there is no dead letter {row_id} (see !deadletters)")

    def apply(tx: Tx) -> Reply:
        if not ctx.store.outbox.retry(tx, row_id, ctx.clock()):
            raise Refused(f"delivery {row_id} is not a dead letter any more")
        return Reply(f"delivery {row_id} to {dead.target} is queued again", effects=(WakeOutbox(),))

    return Change("outbox.retry", f"{dead.channel}:{dead.target}", "", apply,
                  evidence={"outbox_id": str(row_id)})  # fmt: skip


async def _devices(ctx: Context, inv: Invocation, args: Args) -> Reply:
    user_id = args.text("mxid")
    rows = ctx.store.devices.listing(user_id)
    if not rows:
        return Reply(f"the bot has seen no device of {user_id}")
    return Reply(
        "\n".join(
            f"{d.device_id}: {d.state}, ed25519 {d.ed25519}, first seen {_when(d.first_seen)}"
            for d in rows
        )
    )


def _device_change(ctx: Context, user_id: str, device_id: str, state: str) -> Reply | Change:
    known = {d.device_id: d for d in ctx.store.devices.listing(user_id)}
    if device_id not in known:
        return refuse(f"the bot has seen no device {device_id} of {user_id} (see !devices)")

    def apply(tx: Tx) -> Reply:
        ctx.store.devices.set_state(tx, user_id, device_id, state)
        effects = (TrustDevice(user_id, device_id),) if state == "trusted" else ()
        return Reply(f"device {device_id} of {user_id} is {state}", effects=effects)

    return Change(
        f"device.{'trust' if state == 'trusted' else 'block'}",
        f"{user_id} {device_id}",
        "",
        apply,
        evidence={"ed25519": known[device_id].ed25519},
    )


async def _trust(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    return _device_change(ctx, args.text("mxid"), args.text("device"), "trusted")


async def _block(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    return _device_change(ctx, args.text("mxid"), args.text("device"), "blocked")


async def _status(ctx: Context, inv: Invocation, args: Args) -> Reply:
    lines = []
    channels = ctx.status.channels() if ctx.status is not None else {}
    if channels:
        lines += [f"{name}: {state}" for name, state in sorted(channels.items())]
    else:
        lines.append("channels: not reported (no live status source)")
    counts = ctx.store.outbox.counts()
    lines.append(
        f"outbox: {counts.get('pending', 0)} pending, {counts.get('dead', 0)} dead letters, "
        f"{counts.get('sent', 0)} sent"
    )
    last = ctx.store.inbox.last_received()
    lines.append(f"last mail received: {_when(last.get('email'))}")
    lines.append(f"last Matrix event received: {_when(last.get('matrix'))}")
    lines.append(f"members: {len(ctx.store.members.all())} active")
    lines.append(f"open cases: {len(ctx.store.cases.open_cases())}")
    lines.append(ctx.store.audit.verify().summary())
    return Reply("\n".join(lines))


async def _listkey(ctx: Context, inv: Invocation, args: Args) -> Reply:
    if not ctx.list_fpr:
        return refuse("the store has no list key (run 'secir-bot init')")
    armored = await ctx.keyring.export_public(ctx.list_fpr)
    return Reply(
        f"The list key of {ctx.config.list.address}: {ctx.list_fpr} (attached).",
        attachments=(Attachment("list-key.asc", "application/pgp-keys", armored.encode()),),
    )


def _admin(name: str, summary: str, text: str, run: object, *args: Arg) -> Command:
    return Command(name, summary, text, Role.ADMIN, ADMIN_FRONTS, run, args)  # type: ignore[arg-type]


_MXID = Arg("mxid", Kind.MXID, "the Matrix user id")
_DEVICE = Arg("device", Kind.WORD, "the device id (see !devices)")

COMMANDS = (
    _admin(
        "deadletters",
        "list deliveries that failed for good",
        "Lists the newest dead letters: deliveries the outbox gave up on (a permanent error, "
        "or transient errors for longer than delivery.give_up_after), with the last error.",
        _deadletters,
    ),
    _admin(
        "retry",
        "queue a dead letter again",
        "Puts one dead letter back in the outbox, due now, with its attempts reset. Fix the "
        "cause first (a full mailbox, a recipient's expired key...).",
        _retry,
        Arg("id", Kind.NUMBER, "the dead letter's number (see !deadletters)"),
    ),
    _admin(
        "devices",
        "list the Matrix devices the bot has seen of someone",
        "Lists the devices of a Matrix account that the bot has judged: trusted (on first "
        "use) or blocked (its keys changed, or an admin blocked it), with the ed25519 key "
        "to compare with the person's own client.",
        _devices,
        _MXID,
    ),
    _admin(
        "trust",
        "trust a Matrix device after checking its key",
        "Marks a device as trusted, so it gets room keys again; use it after comparing the "
        "device's ed25519 key with its owner, for a device the bot blocked because its keys "
        "changed.",
        _trust,
        _MXID,
        _DEVICE,
    ),
    _admin(
        "block",
        "stop giving room keys to a Matrix device",
        "Marks a device as blocked: it gets no further room keys and its messages are not "
        "relayed (a lost phone, say).",
        _block,
        _MXID,
        _DEVICE,
    ),
    _admin(
        "status",
        "the bot's state at a glance",
        "Shows whether the channels are up, the outbox (pending, dead), when mail and Matrix "
        "events last arrived, the number of members and open cases, and the audit chain.",
        _status,
    ),
    _admin(
        "listkey",
        "the list's public key and fingerprint",
        "Sends the list's public key as an attachment, with its fingerprint, to pass to "
        "members and peers.",
        _listkey,
    ),
)
