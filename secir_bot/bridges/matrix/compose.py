"""The content of an outbox Matrix row as it is sent: what only delivery time knows.

A post's payload is rendered at decision time (``render.py``); the events it hangs on in the
room are known only once they are sent, so here, at delivery:

- its thread relation: in the thread of its root's event, a reply to the event of the post
  it answers (or a fallback reply to the root when that one has no event);
- whom it notifies (``m.mentions``): the author of the post it answers, when that post has
  an event in the room, its author has a Matrix ID and is not the answering post's own
  author, as a native Element reply pings the answered sender. Nobody else: a post in a
  thread without a parent, a post's files (which answer the post itself), notices;
- an edit, for a mail correcting an earlier post (``fidelity.relations.edit_content``):
  the original's mention stays in ``m.new_content``, the edit itself pings nobody again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secir_bot.fidelity.relations import edit_content, mentions
from secir_bot.model import MARKER, LinkKind
from secir_bot.store import Store


def outgoing_content(
    store: Store, payload: Mapping[str, Any], post_uid: str | None
) -> dict[str, Any]:
    """The content to send for ``payload`` (an outbox row's, of the post ``post_uid``),
    without its file's URL (that comes from the upload)."""
    content = dict(payload["content"])
    relation = thread_relation(store, payload.get("root_uid"), payload.get("parent_uid"))
    if relation:
        content["m.relates_to"] = relation
        content["m.mentions"] = reply_mentions(store, post_uid, payload.get("parent_uid"))
    replaced = payload.get("replaces_uid")
    events = store.posts.links_of(replaced, LinkKind.EVENT) if replaced else []
    if events:
        original = store.posts.get(replaced) if replaced else None
        if original is not None:
            # What the replaced event notified, as the final text's mentions; the edit
            # event's own m.mentions stays empty (nobody is pinged again).
            content["m.mentions"] = reply_mentions(store, original.uid, original.parent_uid)
        content = edit_content(events[0], content)
        content[MARKER] = content["m.new_content"].get(MARKER)
    return content


def thread_relation(
    store: Store, root_uid: str | None, parent_uid: str | None
) -> dict[str, Any] | None:
    """The ``m.relates_to`` of a post in the thread of ``root_uid`` answering
    ``parent_uid``; None when the root has no event in the room."""
    if not root_uid:
        return None
    root_events = store.posts.links_of(root_uid, LinkKind.EVENT)
    if not root_events:
        return None
    parent_events = store.posts.links_of(parent_uid, LinkKind.EVENT) if parent_uid else []
    parent_event = parent_events[0] if parent_events else root_events[0]
    return {
        "rel_type": "m.thread",
        "event_id": root_events[0],
        "is_falling_back": parent_event == root_events[0],
        "m.in_reply_to": {"event_id": parent_event},
    }


def reply_mentions(store: Store, post_uid: str | None, parent_uid: str | None) -> dict[str, Any]:
    """The ``m.mentions`` of the post ``post_uid`` answering ``parent_uid``: the answered
    post's author when it has an event in the room, a Matrix ID, and is someone else."""
    if not post_uid or not parent_uid or not store.posts.links_of(parent_uid, LinkKind.EVENT):
        return mentions()
    answered, answering = store.posts.get(parent_uid), store.posts.get(post_uid)
    if answered is None or answering is None or answered.author.id == answering.author.id:
        return mentions()
    return mentions([answered.author.matrix_id] if answered.author.matrix_id else [])
