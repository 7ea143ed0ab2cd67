"""Subjects and threads: what a post is called and where it hangs.

A message hangs where the ids it answers say (a reply, a thread), as far as the posts they
name are known. A Matrix message's subject is "Re:" and its thread's, or its first line.

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

from secir_bot.mime import neutral
from secir_bot.model import Inbound, Post
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
    """Where a received message goes: the post it answers, its thread's root, and notes."""

    parent: Post | None = None
    root: Post | None = None
    notes: tuple[str, ...] = ()


def place(store: Store, inbound: Inbound) -> Placement:
    """The thread of a message: the first post it answers that the list knows (else the
    root of the thread it names), with a note when ids that no signature covers put it in
    someone else's thread."""
    root = store.posts.for_link(*inbound.thread_root) if inbound.thread_root else None
    parent = None
    for kind, value in inbound.replies_to:
        parent = store.posts.for_link(kind, value)
        if parent is not None:
            break
    parent = parent or root
    if parent is None:
        return Placement()
    if root is None:
        root = (store.posts.get(parent.root_uid) if parent.root_uid else None) or parent
    if inbound.replies_signed or root.author.id == inbound.author.id:
        return Placement(parent, root)
    return Placement(parent, root, (UNSIGNED_THREAD_NOTE,))


def subject_of(store: Store, inbound: Inbound, placement: Placement, tag: str) -> str:
    """The subject of a post.

    A mail keeps its signed Subject; for a placeholder (or none) it is "Re:" and the
    thread's subject, else the first line of the signed text (the cleartext Subject is
    never used). A Matrix message has no subject line: in a thread it is "Re:" and the
    thread's subject, else its first line.
    """
    if inbound.subject is None:
        if placement.root is not None:
            return reply_subject(store, placement.root)
        # The first line without the mentions it opens with: "Carol Tanaka (.jp): …" is
        # an address to someone in the room, not what the message is about.
        return first_line(inbound.lead or inbound.text)
    subject = clean_subject(inbound.subject, tag)
    if is_placeholder(subject):
        if placement.root is not None:
            subject = "Re: " + REPLY_PREFIX.sub("", placement.root.subject)
        else:
            subject = first_line(inbound.text)
    return neutral(subject) or "(no subject)"


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
