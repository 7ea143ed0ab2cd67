"""Posts and notices as Matrix content JSON: the payloads of the outbox's Matrix rows.

A relayed post is ``m.text`` carrying the bot's ``MARKER`` (so it is never mirrored back),
with an HTML form that escapes everything the author wrote; bot text is ``m.notice`` (the
spec's rule for automated clients). Neither mentions anyone by accident (empty
``m.mentions``). A post's thread relation is added at delivery (``send.py``), once the
event of its root is known.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from secir_bot.model import MARKER, Channel, DeliveryKind, Post
from secir_bot.store import NewDelivery

ROOM_TEXT_LIMIT = 16_000  # characters of a mail shown in the room (body + HTML + encryption)


def post_content(post: Post) -> dict[str, Any]:
    """The content of a relayed mail post, as members see it in the room."""
    text = post.body
    if len(text) > ROOM_TEXT_LIMIT:
        # A Matrix event holds at most 64 KiB; the whole text still goes out by mail.
        text = text[:ROOM_TEXT_LIMIT] + "\n\n[… truncated here; the full text went out by mail]"
    if post.attachments:
        text += "\n\n[attachments not relayed: " + ", ".join(post.attachments) + "]"
    head = f"{post.author.label} by email"
    notes = "".join(f"[{note}]\n" for note in post.notes)
    body = f"{head}: {post.subject}\n{notes}\n{text}"
    formatted = (
        f"<p><strong>{html.escape(post.author.label)}</strong> by email: "
        f"<strong>{html.escape(post.subject)}</strong></p>"
        + "".join(f"<p><em>{html.escape(note)}</em></p>" for note in post.notes)
        + f"<pre>{html.escape(text)}</pre>"
    )
    return {
        "msgtype": "m.text",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": formatted,
        "m.mentions": {},
        MARKER: {"post": post.uid, "from": "email"},
    }


def notice_content(
    text: str, *, answering: Mapping[str, Any] | None = None, threaded: bool = False
) -> dict[str, Any]:
    """Bot text; an answer to an event is a reply to it, in its thread if it is in one, and
    with ``threaded`` (a command's answer) in a thread of its own otherwise."""
    if answering is None:
        return {"msgtype": "m.notice", "body": text, "m.mentions": {}}
    relation: dict[str, object] = {"m.in_reply_to": {"event_id": answering.get("event_id", "?")}}
    thread = (answering.get("content") or {}).get("m.relates_to") or {}
    if isinstance(thread, dict) and thread.get("rel_type") == "m.thread":
        # An answer to a message in a thread belongs in that thread (issue 6).
        relation.update(rel_type="m.thread", event_id=thread.get("event_id"), is_falling_back=True)
    elif threaded:
        relation.update(
            rel_type="m.thread", event_id=answering.get("event_id", "?"), is_falling_back=True
        )
    return {"msgtype": "m.notice", "m.mentions": {}, "body": text, "m.relates_to": relation}


class MatrixRenderer:
    """The ``RoomRenderer`` of the Matrix channel (see ``bridges/__init__.py``)."""

    channel = Channel.MATRIX

    def post(self, post: Post, room: str) -> NewDelivery:
        payload = {
            "content": post_content(post),
            "root_uid": post.root_uid,
            "parent_uid": post.parent_uid,
        }
        return NewDelivery(
            channel=Channel.MATRIX,
            target=room,
            kind=DeliveryKind.POST,
            payload=json.dumps(payload).encode(),
            post_uid=post.uid,
        )

    def notice(
        self,
        room: str,
        text: str,
        *,
        answering: Mapping[str, Any] | None = None,
        threaded: bool = False,
    ) -> NewDelivery:
        content = notice_content(text, answering=answering, threaded=threaded)
        return NewDelivery(
            channel=Channel.MATRIX,
            target=room,
            kind=DeliveryKind.NOTICE,
            payload=json.dumps({"content": content}).encode(),
        )
