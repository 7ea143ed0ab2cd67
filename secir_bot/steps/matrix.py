"""Steps for events in the incident room.

The bot never acts on its own events, on ``m.notice`` (the spec's rule for automated
clients) or on anything carrying its relay marker; and it refuses to relay an event that
did not arrive encrypted.
"""

from __future__ import annotations

import json

from secir_bot.model import MARKER, DeviceVerdict
from secir_bot.steps import CONTINUE, Decision, MatrixItem, Services, drop, reject


async def parse(ctx: MatrixItem, s: Services) -> Decision:
    try:
        ctx.event = json.loads(ctx.item.raw)
    except ValueError:
        return drop("stored event is not JSON")
    ctx.room_id = ctx.facts.room_id
    if not isinstance(ctx.event, dict) or not isinstance(ctx.event.get("content"), dict):
        return reject("malformed event (its content is not an object)")
    return CONTINUE


async def not_own_event(ctx: MatrixItem, s: Services) -> Decision:
    if ctx.event.get("sender") == s.bot_user_id:
        return drop("own event")
    return CONTINUE


async def is_human_message(ctx: MatrixItem, s: Services) -> Decision:
    content = ctx.event.get("content") or {}
    if ctx.event.get("type") != "m.room.message":
        return drop(f"not a message ({ctx.event.get('type')})")
    if MARKER in content:
        return drop("relayed by the bot")
    if content.get("msgtype") == "m.notice":
        return drop("notice (automated)")
    rel = content.get("m.relates_to") or {}
    if rel.get("rel_type") == "m.replace":
        return reject("edits cannot be mirrored to email; post a follow-up message instead")
    return CONTINUE


async def was_encrypted(ctx: MatrixItem, s: Services) -> Decision:
    if not ctx.facts.encrypted:
        return reject("the message was not end-to-end encrypted; it is not relayed")
    return CONTINUE


# Why a message from a device other than a trusted one is refused, by the bridge's verdict.
DEVICE_REASONS: dict[str, str] = {
    DeviceVerdict.BLOCKED: (
        "sent from a Matrix device that the bot blocked because its keys changed"
    ),
    DeviceVerdict.MISMATCH: (
        "the message names one device but was encrypted by another (a possible forgery)"
    ),
    DeviceVerdict.UNKNOWN: (
        "sent from a Matrix device that the homeserver does not list for the sender"
    ),
    DeviceVerdict.REFUSED: "sent from a Matrix account that may not post in this room",
    DeviceVerdict.FORWARDED: "its room key came forwarded, so its sender cannot be verified",
    DeviceVerdict.UNSIGNED: (
        "sent from a Matrix device that its owner has not verified (signed with their "
        "cross-signing identity); verify it from another of your sessions (in Element: "
        "Settings, Sessions) and send the message again"
    ),
    DeviceVerdict.IDENTITY: (
        "the sender's Matrix identity (cross-signing keys) changed and waits for an admin "
        "to confirm it"
    ),
    DeviceVerdict.NO_XSIGN: (
        "this list accepts only Matrix devices verified by their owner, and the sender's "
        "account has no cross-signing; set it up (in Element: Settings, Security & Privacy) "
        "and verify this session, then send the message again"
    ),
}


async def from_a_trusted_device(ctx: MatrixItem, s: Services) -> Decision:
    """Only devices the bot judged trusted count as a member's; everything else, including
    a verdict that is missing, is refused on both ways."""
    verdict = ctx.facts.device or DeviceVerdict.UNKNOWN
    if verdict == DeviceVerdict.TRUSTED:
        return CONTINUE
    why = DEVICE_REASONS.get(
        verdict, f"sent from a Matrix device the bot does not trust ({verdict[:20]})"
    )
    return reject(f"{why}; the message is not relayed")


async def sender_is_member(ctx: MatrixItem, s: Services) -> Decision:
    sender = str(ctx.event.get("sender", ""))
    member = s.store.members.by_matrix_id(sender)
    if member is None:
        return reject(f"{sender} is not a member; the message is not relayed")
    if not member.active:
        return reject(f"{sender} is {member.status}; the message is not relayed")
    ctx.sender = member
    return CONTINUE


async def has_text(ctx: MatrixItem, s: Services) -> Decision:
    content = ctx.event.get("content") or {}
    msgtype = str(content.get("msgtype"))[:40]
    if msgtype not in ("m.text", "m.emote"):
        return reject(f"{msgtype} messages are not mirrored yet; send text")
    if not str(content.get("body", "")).strip():
        return drop("empty message")
    return CONTINUE
