"""Steps for events in the incident room.

The bot never acts on its own events, on ``m.notice`` (the spec's rule for automated
clients) or on anything carrying its relay marker; and it refuses to relay an event that
did not arrive encrypted.
"""

from __future__ import annotations

import json

from secir_bot.fidelity.totext import HTML_FORMAT, matrix_to_text
from secir_bot.model import MARKER, Channel, DeviceVerdict, Inbound, LinkKind
from secir_bot.steps import CONTINUE, Decision, MatrixItem, Services, drop, reject


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
    """A text message, read as mail text: from its HTML when it has some (Element keeps
    the Markdown source in ``body``, which must not reach mail), with the mentions of
    members written as their "Name (.tld)"."""
    content = ctx.event.get("content") or {}
    msgtype = str(content.get("msgtype"))[:40]
    if msgtype not in ("m.text", "m.emote"):
        return reject("not-text", msgtype=msgtype)
    if not str(content.get("body", "")).strip():
        return drop("empty")

    def label(user_id: str) -> str | None:
        member = s.store.members.by_matrix_id(user_id)
        return member.label if member is not None else None

    # A reply of nothing but the quoted fallback reads as no text: the policy refuses it.
    read = matrix_to_text(content, label)
    ctx.text, ctx.lead = read.text, read.lead
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
    text = ctx.text
    if content.get("msgtype") == "m.emote":
        text = f"* {ctx.sender.name} {text}"
    formatted = content.get("formatted_body")
    html = (
        formatted if content.get("format") == HTML_FORMAT and isinstance(formatted, str) else None
    )
    return Inbound(
        channel=Channel.MATRIX,
        room=ctx.room_id,
        author=ctx.sender,
        text=text,
        subject=None,
        source=(LinkKind.EVENT, str(ctx.event.get("event_id"))),
        replies_to=((LinkKind.EVENT, str(reply_to)),) if reply_to else (),
        thread_root=(LinkKind.EVENT, str(root)) if root else None,
        formatted=html if content.get("msgtype") == "m.text" else None,
        lead=ctx.lead,
    )
