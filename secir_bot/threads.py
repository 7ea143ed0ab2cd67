"""Subjects and threads: what a post is called and where it hangs.

A Matrix event hangs where its relations say (a reply, a thread), as far as the posts they
name are known; its subject is "Re:" and its thread's, or its first line.

A mail's subject and thread come from what its sender signed. The cleartext Subject and
the thread headers of the envelope are not covered by any signature: anyone who captured a
member's signed mail can send it again under another Subject or as a reply to another
thread. So the subject shown is the protected (signed) Subject, else the first line of the
signed text; and the unsigned thread headers are only a hint, used without comment in a
thread the signer started, and with a visible note anywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from secir_bot.mime import Content, Envelope, neutral
from secir_bot.model import LinkKind, Member, Post
from secir_bot.store import Store

REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|fwd?)\s*:\s*)+", re.IGNORECASE)
PLACEHOLDER_SUBJECTS = {"", "...", "encrypted message", "(no subject)"}
UNSIGNED_THREAD_NOTE = (
    "Placed in this thread by the mail's unsigned reply headers: the signature does not "
    "cover which message it answers."
)
UNADDRESSED_NOTE = (
    "The signed content does not name the list as a recipient, so it may be a copy of a "
    "mail that was sent elsewhere (the sender's mail client does not protect its headers)."
)


def clean_subject(subject: str, tag: str = "SECIR") -> str:
    """Drop the list's own ``[TAG]`` (anywhere after a ``Re:``); other tags such as
    ``[TLP:AMBER]`` are the author's and stay."""
    own = re.compile(r"\[\s*" + re.escape(tag) + r"\s*\]\s*", re.IGNORECASE)
    # Any whitespace, line and paragraph separators included, becomes one space.
    return re.sub(r"\s+", " ", own.sub("", subject)).strip()


def is_placeholder(subject: str) -> bool:
    """Subjects that clients put in the clear when the real one is protected."""
    return REPLY_PREFIX.sub("", subject).strip().lower() in PLACEHOLDER_SUBJECTS


def first_line(body: str, limit: int = 72) -> str:
    """The first non-blank line, shortened, as a subject (encoded-words neutralised)."""
    line = next((ln.strip() for ln in body.splitlines() if ln.strip()), "(no subject)")
    line = neutral(line)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Placement:
    """Where a received mail goes: the post it answers, its thread's root, and notes."""

    parent: Post | None = None
    root: Post | None = None
    notes: tuple[str, ...] = ()


def place_mail(store: Store, content: Content, envelope: Envelope, signer: Member) -> Placement:
    """The thread of a mail: by its signed thread headers when it has any, else by the
    envelope's (unsigned) ones, with a note when that puts it in someone else's thread."""
    signed = content.threaded
    if signed:
        ids = (*content.in_reply_to, *reversed(content.references))
    else:
        ids = (*envelope.in_reply_to, *reversed(envelope.references))
    parent = None
    for message_id in ids:
        parent = store.posts.for_link(LinkKind.MSGID, message_id)
        if parent is not None:
            break
    if parent is None:
        return Placement()
    root = (store.posts.get(parent.root_uid) if parent.root_uid else None) or parent
    if signed or root.author.id == signer.id:
        return Placement(parent, root)
    return Placement(parent, root, (UNSIGNED_THREAD_NOTE,))


def mail_subject(content: Content, placement: Placement, tag: str) -> str:
    """The signed Subject; for a placeholder (or none), "Re:" and the thread's subject,
    else the first line of the signed text. The cleartext Subject is never used."""
    subject = clean_subject(content.subject or "", tag)
    if is_placeholder(subject):
        if placement.root is not None:
            subject = "Re: " + REPLY_PREFIX.sub("", placement.root.subject)
        else:
            subject = first_line(content.text)
    return neutral(subject) or "(no subject)"


def place_event(store: Store, content: dict[str, Any]) -> Placement:
    """The thread of a Matrix event, from its relations (a reply; a thread, whose root is
    the parent too when the event is not a reply or says it only falls back to it)."""
    rel = content.get("m.relates_to") or {}
    parent = root = None
    reply_to = (rel.get("m.in_reply_to") or {}).get("event_id")
    if reply_to:
        parent = store.posts.for_link(LinkKind.EVENT, str(reply_to))
    if rel.get("rel_type") == "m.thread" and rel.get("event_id"):
        root = store.posts.for_link(LinkKind.EVENT, str(rel["event_id"]))
        if parent is None or rel.get("is_falling_back"):
            parent = parent or root
    if parent is not None and root is None:
        root = store.posts.get(parent.root_uid) if parent.root_uid else parent
    return Placement(parent, root)


def reply_subject(store: Store, root: Post) -> str:
    """The subject of a reply in a thread: "Re:" and the subject of its first post."""
    first = store.posts.get(root.root_uid) if root.root_uid else root
    return "Re: " + REPLY_PREFIX.sub("", (first or root).subject)


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted ``> <@user> ...`` fallback that older clients put before replies."""
    lines = body.split("\n")
    if lines and lines[0].startswith("> <"):
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
    return "\n".join(lines)
