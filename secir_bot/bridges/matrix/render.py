"""Posts and notices as Matrix content JSON: the payloads of the outbox's Matrix rows.

A relayed post is ``m.text`` carrying the bot's ``MARKER`` (so it is never mirrored back),
with an HTML form made by ``fidelity`` from what the author wrote (escaped text, or their
HTML sanitised to Matrix's subset); bot text is ``m.notice`` (the
spec's rule for automated clients). Neither mentions anyone by accident (empty
``m.mentions``). A post's thread relation, and the mention of the author it answers, are
added at delivery (``compose.py``), once the events of its root and parent are known.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Any

from secir_bot.bridges.matrix.media import encrypt_media, media_content
from secir_bot.fidelity.fit import CIPHERTEXT_BUDGET, encrypted_size, fit
from secir_bot.fidelity.fromtext import MatrixText, text_to_matrix
from secir_bot.fidelity.sanitize import for_matrix
from secir_bot.model import MARKER, Channel, DeliveryKind, Post
from secir_bot.store import NewDelivery

CUT_NOTE = "[… cut here: the whole text went out by mail]"


def _heading(post: Post) -> MatrixText:
    """Who wrote a relayed mail, its subject, and what readers must know about it."""
    head = f"{post.author.label} by email: {post.subject}"
    notes = "".join(f"[{note}]\n" for note in post.notes)
    formatted = (
        f"<p><strong>{html.escape(post.author.label)}</strong> by email: "
        f"<strong>{html.escape(post.subject)}</strong></p>"
        + "".join(f"<p><em>{html.escape(note)}</em></p>" for note in post.notes)
    )
    return MatrixText(body=f"{head}\n{notes}\n", formatted_body=formatted)


def _content(post: Post, text: MatrixText) -> dict[str, Any]:
    head = _heading(post)
    body = MatrixText(head.body + text.body, head.formatted_body + text.formatted_body)
    return {**body.content(), MARKER: {"post": post.uid, "from": "email"}}


def post_content(post: Post) -> dict[str, Any]:
    """The content of a relayed mail post, as members see it in the room.

    Mail text reads as mail in the room (``fidelity.fromtext``: paragraphs, quotes, a
    folded quoted tail, monospace only for laid-out blocks); an HTML-only mail shows its
    HTML, already sanitised for Matrix. A text too large for one encrypted event is cut at
    a line end (``fidelity.fit``: non-ASCII text grows most), never refused by the
    homeserver; the whole text still goes out by mail.
    """
    text = post.body
    if post.attachments:
        text += "\n\n[attachments not relayed: " + ", ".join(post.attachments) + "]"
    if post.formatted is not None:
        whole = _content(post, MatrixText(text, for_matrix(post.formatted)))
        if encrypted_size(whole) <= CIPHERTEXT_BUDGET:
            return whole

    def render(part: str, cut: bool) -> dict[str, Any]:
        return _content(post, text_to_matrix(part + ("\n\n" + CUT_NOTE if cut else "")))

    content, _ = fit(text, render)
    return dict(content)


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
        payload: dict[str, Any] = {
            "content": post_content(post),
            "root_uid": post.root_uid,
            "parent_uid": post.parent_uid,
        }
        if post.corrects:
            # A mail correcting an earlier mail post: an edit of the event that relayed
            # it (found at delivery, ``send.py``), not a new message in the room.
            payload = {"content": payload["content"], "replaces_uid": post.corrects}
        return NewDelivery(
            channel=Channel.MATRIX,
            target=room,
            kind=DeliveryKind.POST,
            payload=json.dumps(payload).encode(),
            post_uid=post.uid,
        )

    def files(self, post: Post, room: str) -> list[NewDelivery]:
        """One event per file of a post, in the post's thread right after its text.

        Each file is encrypted here, at decision time, with its own key (the spec's
        encrypted attachments); the ciphertext travels in the outbox row and is uploaded
        when the row is delivered (``send.py``), once: the upload's mxc URL is kept, so a
        retry neither uploads again nor posts a second copy (the send's transaction id is
        the row's)."""
        out = []
        for file in post.files:
            encrypted = encrypt_media(file.data)
            content = media_content(
                filename=file.filename,
                content_type=file.content_type,
                data=file.data,
                file=encrypted.file(""),  # the URL is known once the upload is done
            )
            content[MARKER] = {"post": post.uid, "from": "email"}
            payload = {
                "content": content,
                # In the thread of the post (its own, when it starts one), answering it.
                "root_uid": post.root_uid or post.uid,
                "parent_uid": post.uid,
                "upload": base64.b64encode(encrypted.ciphertext).decode("ascii"),
            }
            out.append(
                NewDelivery(
                    channel=Channel.MATRIX,
                    target=room,
                    kind=DeliveryKind.POST,
                    payload=json.dumps(payload).encode(),
                    post_uid=post.uid,
                )
            )
        return out

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
