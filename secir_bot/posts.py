"""From an accepted message (its ``Inbound``) to a ``Post``: what it is called, where it hangs.

The intake named the author (the signing key, the trusted device); subject and thread follow
the rules of ``threads.py``. Each post is also known by the ids it has on the
channels (``links``): the author's own Message-ID or event id, and the Message-ID of the
list's copy, so that replies on either side find it.
"""

from __future__ import annotations

from dataclasses import dataclass

from secir_bot.fidelity.relations import correction_subject, retraction_subject
from secir_bot.model import Inbound, LinkKind, Post, message_id, new_uid
from secir_bot.store import Store
from secir_bot.threads import place, subject_of


@dataclass(frozen=True)
class NewPost:
    """A post to record, with its ids on the channels and the signature it was accepted on."""

    post: Post
    links: tuple[tuple[LinkKind, str], ...]
    signature: tuple[str, str] | None = None  # (signer's fingerprint, signature id)


def of_inbound(store: Store, inbound: Inbound, tag: str, domain: str) -> NewPost:
    """The post of a message that passed its intake and the policy steps."""
    placement = place(store, inbound)
    uid = new_uid()
    subject = subject_of(store, inbound, placement, tag)
    revised = store.posts.get(inbound.revises[1]) if inbound.revises else None
    if inbound.revises and revised is not None:
        # Mail cannot be edited or unsent: a marked mail in the original's thread.
        mark = correction_subject if inbound.revises[0] == "correction" else retraction_subject
        subject = mark(revised.subject)
    post = Post(
        uid=uid,
        origin=inbound.channel,
        author=inbound.author,
        subject=subject,
        body=inbound.text,
        parent_uid=placement.parent.uid if placement.parent else None,
        root_uid=placement.root.uid if placement.root else None,
        attachments=inbound.attachments,
        formatted=inbound.formatted,
        files=inbound.files,
        corrects=revised.uid
        if revised and inbound.revises == ("correction", revised.uid)
        else None,
        notes=(*inbound.notes, *placement.notes),
    )
    links = (inbound.source, (LinkKind.MSGID, message_id(uid, domain)))
    return NewPost(post, links, inbound.signature)
