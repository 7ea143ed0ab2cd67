"""From an accepted item to a ``Post``: who wrote it, what it is called, where it hangs.

The signing key names a mail's author and the trusted device a Matrix event's; subject and
thread follow the rules of ``threads.py``. Each post is also known by the ids it has on the
channels (``links``): the author's own Message-ID or event id, and the Message-ID of the
list's copy, so that replies on either side find it.
"""

from __future__ import annotations

from dataclasses import dataclass

from secir_bot.model import Channel, LinkKind, Post, message_id, new_uid
from secir_bot.steps import MailItem, MatrixItem
from secir_bot.store import Store
from secir_bot.threads import (
    first_line,
    mail_subject,
    place_event,
    place_mail,
    reply_subject,
    strip_reply_fallback,
)


@dataclass(frozen=True)
class NewPost:
    """A post to record, with its ids on the channels and the signature it was accepted on."""

    post: Post
    links: tuple[tuple[LinkKind, str], ...]
    signature: tuple[str, str] | None = None  # (signer's fingerprint, signature id)


def of_mail(store: Store, ctx: MailItem, tag: str, domain: str) -> NewPost:
    """The post of a mail that passed the email stage."""
    assert ctx.signer is not None and ctx.envelope is not None and ctx.content is not None
    env, content = ctx.envelope, ctx.content
    place = place_mail(store, content, env, ctx.signer)
    parent = place.parent
    post = Post(
        uid=new_uid(),
        origin=Channel.EMAIL,
        author=ctx.signer,
        subject=mail_subject(content, place, tag),
        body=content.text,
        parent_uid=parent.uid if parent else None,
        root_uid=(parent.root_uid or parent.uid) if parent else None,
        attachments=content.attachments,
        notes=(*ctx.notes, *place.notes),
    )
    links = ((LinkKind.MSGID, env.source_id), (LinkKind.MSGID, message_id(post.uid, domain)))
    signature = (ctx.signer.fingerprint, ctx.signature) if ctx.signature else None
    return NewPost(post, links, signature)


def of_event(store: Store, ctx: MatrixItem, domain: str) -> NewPost:
    """The post of a Matrix event that passed the Matrix stage."""
    assert ctx.sender is not None
    content = ctx.event.get("content") or {}
    place = place_event(store, content)
    parent, root = place.parent, place.root
    body = strip_reply_fallback(str(content.get("body", "")))
    if content.get("msgtype") == "m.emote":
        body = f"* {ctx.sender.name} {body}"
    post = Post(
        uid=new_uid(),
        origin=Channel.MATRIX,
        author=ctx.sender,
        subject=reply_subject(store, root) if root is not None else first_line(body),
        body=body,
        parent_uid=parent.uid if parent else None,
        root_uid=root.uid if root else None,
    )
    links = (
        (LinkKind.EVENT, str(ctx.event.get("event_id"))),
        (LinkKind.MSGID, message_id(post.uid, domain)),
    )
    return NewPost(post, links)
