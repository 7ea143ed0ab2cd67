"""Steps for events in the incident room.

The bot never acts on its own events, on ``m.notice`` (the spec's rule for automated
clients) or on anything carrying its relay marker; and it refuses to relay an event that
did not arrive encrypted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from secir_bot.captions import MEDIA, captioned
from secir_bot.commands.parse import is_matrix_command
from secir_bot.fidelity.attachments import Attachment, check_all
from secir_bot.fidelity.relations import (
    parse_edit,
    parse_reaction,
    redacted_event,
    retraction_text,
)
from secir_bot.fidelity.totext import HTML_FORMAT, matrix_to_text
from secir_bot.model import MARKER, Channel, DeviceVerdict, File, Inbound, LinkKind
from secir_bot.steps import CONTINUE, Decision, MatrixItem, Services, command, drop, reject


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
    """A member's message, an edit of one, or a redaction; a reaction is recorded (its
    inbox row says who reacted how to what) and not mirrored one by one."""
    content = ctx.event.get("content") or {}
    kind = ctx.event.get("type")
    if kind == "m.reaction":
        found = parse_reaction(ctx.event)
        return drop("reaction", key=found.key if found else "?")
    if kind == "m.room.redaction" and (target := redacted_event(ctx.event)) is not None:
        ctx.redacts = target
        return CONTINUE
    if kind != "m.room.message":
        return drop("not-a-message", type=kind)
    if MARKER in content:
        return drop("relayed-by-bot")
    if content.get("msgtype") == "m.notice":
        return drop("notice")
    rel = content.get("m.relates_to") or {}
    if rel.get("rel_type") == "m.replace":
        ctx.edit = parse_edit(content)
        if ctx.edit is None:
            return drop("edit-malformed")
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
    # A redaction is never encrypted (the server must read it); it can only withdraw the
    # sender's own post (``is_text``), and says nothing but that.
    if not ctx.facts.encrypted and ctx.redacts is None:
        return reject("not-e2e")
    return CONTINUE


_VERDICTS = frozenset(v.value for v in DeviceVerdict)


async def from_a_trusted_device(ctx: MatrixItem, s: Services) -> Decision:
    """Only devices the bot judged trusted count as a member's; everything else, including
    a verdict that is missing, is refused on both ways."""
    verdict = ctx.facts.device or DeviceVerdict.UNKNOWN
    if verdict == DeviceVerdict.TRUSTED or ctx.redacts is not None:
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
    members written as their "Name (.tld)". A file or picture is taken with the file the
    bridge fetched at intake (``store.media``), within the list's limits."""
    assert ctx.sender is not None
    if ctx.redacts is not None:
        return _retraction(ctx, s, ctx.redacts)
    content = ctx.event.get("content") or {}
    if ctx.edit is not None:
        original = s.store.posts.for_link(LinkKind.EVENT, ctx.edit.replaces)
        if original is None:
            return drop("edit-unknown-original")
        if original.author.id != ctx.sender.id:
            return drop("edit-not-author")  # invalid by the spec: clients ignore it too
        content = ctx.edit.new_content
        if content.get("msgtype") not in ("m.text", "m.emote"):
            # A caption's edit, say: the file went out already and stays as it was.
            return drop("edit-not-text", msgtype=str(content.get("msgtype"))[:40])
        ctx.revises = ("correction", original.uid)
    msgtype = str(content.get("msgtype"))[:40]
    if msgtype in MEDIA:
        return _media(ctx, s, content)
    if msgtype not in ("m.text", "m.emote"):
        return reject("not-text", msgtype=msgtype)
    if not str(content.get("body", "")).strip():
        return drop("empty")
    # A reply of nothing but the quoted fallback reads as no text: the policy refuses it.
    read = matrix_to_text(content, _labels(s))
    ctx.text, ctx.lead = read.text, read.lead
    return CONTINUE


def _retraction(ctx: MatrixItem, s: Services, target: str) -> Decision:
    """A redaction of the sender's own relayed post becomes a retraction notice to the
    mail members, in the post's thread (mail cannot be unsent, and it says so)."""
    assert ctx.sender is not None
    original = s.store.posts.for_link(LinkKind.EVENT, target)
    if original is None:
        return drop("redaction-unknown")  # never relayed: nothing to withdraw by mail
    if original.author.id != ctx.sender.id:
        return drop("redaction-not-author")
    ctx.text = retraction_text(ctx.sender.label)
    ctx.revises = ("retraction", original.uid)
    return CONTINUE


def _labels(s: Services) -> Callable[[str], str | None]:
    def label(user_id: str) -> str | None:
        member = s.store.members.by_matrix_id(user_id)
        return member.label if member is not None else None

    return label


def checked_file(s: Services, event_id: str) -> Attachment | str:
    """A media event's file as the bridge fetched it, when the list's limits let it be
    relayed; else why not (not had, too large, of a blocked type)."""
    stored = s.store.media.get(event_id)
    if stored is None or stored.data is None:
        return (stored.problem if stored is not None else None) or "the file was not fetched"
    file = Attachment(stored.filename, stored.content_type, stored.data)
    refusals = check_all((file,), s.config.list.attachments)
    if refusals:
        return "; ".join(r.text() for r in refusals)
    return file


def _media(ctx: MatrixItem, s: Services, content: dict[str, Any]) -> Decision:
    """A file: the one the bridge fetched, checked against the limits; its caption (the
    body, when the event names the file apart) is the text, else the file's name."""
    file = checked_file(s, str(ctx.event.get("event_id", "")))
    if isinstance(file, str):
        return reject("files-refused", why=file)
    ctx.files = (File(file.filename, file.content_type, file.data),)
    read = matrix_to_text(content, _labels(s)) if captioned(content) else None
    if read is not None and read.text.strip():
        ctx.text, ctx.lead = read.text, read.lead
    else:
        ctx.text = ctx.lead = f"File: {file.filename}"
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
    if ctx.redacts is not None or ctx.edit is not None:
        # A correction or a retraction answers the post it revises, in its thread.
        reply_to = ctx.redacts or (ctx.edit.replaces if ctx.edit else None)
        rel, content = {}, {}
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
        formatted=html if content.get("msgtype") in ("m.text", *MEDIA) else None,
        files=ctx.files,
        lead=ctx.lead,
        revises=ctx.revises,
    )


def with_caption(file: Inbound, text: Inbound) -> Inbound:
    """A caption-less file and the text its sender posted next (``captions``), as one
    message: the text's words (and HTML) with the file attached, where the file hangs."""
    return dataclasses.replace(
        file,
        text=text.text,
        formatted=text.formatted,
        lead=text.lead,
        replies_to=file.replies_to or text.replies_to,
    )
