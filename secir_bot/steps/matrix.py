"""Steps for events in the incident room.

The bot never acts on its own events, on ``m.notice`` (the spec's rule for automated
clients) or on anything carrying its relay marker; and it refuses to relay an event that
did not arrive encrypted.
"""

from __future__ import annotations

import json

from secir_bot.commands.parse import is_matrix_command
from secir_bot.model import MARKER, Channel, DeviceVerdict, Inbound, LinkKind
from secir_bot.steps import CONTINUE, Decision, MatrixItem, Services, command, drop, reject
from secir_bot.threads import strip_reply_fallback


async def parse(ctx: MatrixItem, s: Services) -> Decision:
    try:
        ctx.event = json.loads(ctx.item.raw)
    except ValueError:
        return drop("not-json")
    ctx.room_id = ctx.facts.room_id
    if not isinstance(ctx.event, dict) or not isinstance(ctx.event.get("content"), dict):
        return reject("malformed-event")
    return CONTINUE


async def not_own_event(ctx: MatrixItem, s: Services) -> Decision:
    if ctx.event.get("sender") == s.bot_user_id:
        return drop("own-event")
    return CONTINUE


async def accepted_invitation(ctx: MatrixItem, s: Services) -> Decision:
    """Someone joined the direct room the bot opened for them: a nominee's Matrix account
    accepting the bot's invitation, which the subscription procedure counts as its proof
    (the sync hands over only such joins)."""
    if ctx.event.get("type") == "m.room.member":
        return command("invitation-accepted")
    return CONTINUE


async def is_human_message(ctx: MatrixItem, s: Services) -> Decision:
    content = ctx.event.get("content") or {}
    if ctx.event.get("type") != "m.room.message":
        return drop("not-a-message", type=ctx.event.get("type"))
    if MARKER in content:
        return drop("relayed-by-bot")
    if content.get("msgtype") == "m.notice":
        return drop("notice")
    rel = content.get("m.relates_to") or {}
    if rel.get("rel_type") == "m.replace":
        return reject("edit")
    return CONTINUE


async def command_or_message(ctx: MatrixItem, s: Services) -> Decision:
    """A message starting with ``!`` is a command wherever it is sent: it goes to the
    dispatcher (which checks the encryption, the sender and the device itself, since an
    admin need not be a member) and never to the list. Anything else in the control room
    or in a direct chat with the bot is not for the list, and is left alone."""
    content = ctx.event.get("content") or {}
    if is_matrix_command(str(content.get("body", ""))):
        return command()
    if ctx.room_id != s.config.matrix.incident_room:
        return drop("not-for-the-list")
    return CONTINUE


async def was_encrypted(ctx: MatrixItem, s: Services) -> Decision:
    if not ctx.facts.encrypted:
        return reject("not-e2e")
    return CONTINUE


_VERDICTS = frozenset(v.value for v in DeviceVerdict)


async def from_a_trusted_device(ctx: MatrixItem, s: Services) -> Decision:
    """Only devices the bot judged trusted count as a member's; everything else, including
    a verdict that is missing, is refused on both ways."""
    verdict = ctx.facts.device or DeviceVerdict.UNKNOWN
    if verdict == DeviceVerdict.TRUSTED:
        return CONTINUE
    if verdict in _VERDICTS:
        return reject(f"device-{verdict}")  # the reason says what the bridge found
    return reject("device-untrusted", verdict=verdict[:20])


async def sender_is_member(ctx: MatrixItem, s: Services) -> Decision:
    sender = str(ctx.event.get("sender", ""))
    member = s.store.members.by_matrix_id(sender)
    if member is None:
        return reject("sender-not-member", sender=sender)
    if not member.active:
        return reject("sender-inactive", sender=sender, status=member.status)
    ctx.sender = member
    return CONTINUE


async def is_text(ctx: MatrixItem, s: Services) -> Decision:
    content = ctx.event.get("content") or {}
    msgtype = str(content.get("msgtype"))[:40]
    if msgtype not in ("m.text", "m.emote"):
        return reject("not-text", msgtype=msgtype)
    if not str(content.get("body", "")).strip():
        return drop("empty")
    return CONTINUE


def inbound_of(ctx: MatrixItem) -> Inbound:
    """What the stage ends in: the event as its trusted device sent it, channel-neutral.

    Its relations name what it answers (``m.in_reply_to``) and its thread (``m.thread``);
    the quoted fallback that older clients put before a reply is not part of its text.
    """
    assert ctx.sender is not None
    content = ctx.event.get("content") or {}
    rel = content.get("m.relates_to") or {}
    reply_to = (rel.get("m.in_reply_to") or {}).get("event_id")
    root = rel.get("event_id") if rel.get("rel_type") == "m.thread" else None
    text = strip_reply_fallback(str(content.get("body", "")))
    if content.get("msgtype") == "m.emote":
        text = f"* {ctx.sender.name} {text}"
    return Inbound(
        channel=Channel.MATRIX,
        room=ctx.room_id,
        author=ctx.sender,
        text=text,
        subject=None,
        source=(LinkKind.EVENT, str(ctx.event.get("event_id"))),
        replies_to=((LinkKind.EVENT, str(reply_to)),) if reply_to else (),
        thread_root=(LinkKind.EVENT, str(root)) if root else None,
    )
