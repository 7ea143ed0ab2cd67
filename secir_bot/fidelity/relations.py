"""Mentions, edits, corrections, redactions and reactions: the pure half.

Matrix:
- ``m.mentions`` (spec v1.7, "User and room mentions") decides whom an event notifies. The
  bot sets it on everything it posts, empty unless it means to notify someone, and never
  ``room``: a relayed mail that contains a member's name must not ping them by accident.
- An edit is an ``m.room.message`` with ``m.relates_to.rel_type = m.replace`` and the new
  content in ``m.new_content`` (spec v1.4, "Event replacements"); it is valid only from the
  original's sender, in the same room, with the same event type, and never of an edit.
- A redaction names the event it removes in ``content.redacts`` (room version 11) or in the
  event's top-level ``redacts`` (earlier versions).
- A reaction is an ``m.reaction`` whose ``m.relates_to`` is an ``m.annotation`` with a key.

Mail cannot be edited or unsent: an edit goes out as a correction mail threaded to the
original and a redaction as a retraction notice; a mail that corrects an earlier post (a
``[correction]`` subject tag or a ``Supersedes:`` header, from the same member) becomes a
Matrix edit of the relayed post.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

USER_ID = re.compile(r"@[^:\s/]{1,255}:[A-Za-z0-9.\-\[\]:]{1,255}")
_MSGID = re.compile(r"<[^<>\s]+>")
CORRECTION_TAG = re.compile(r"\[\s*(correction|corrected)\s*\]\s*", re.IGNORECASE)
EDIT_FALLBACK_PREFIX = "* "


# -- mentions ----------------------------------------------------------------------------


def mentions(user_ids: Iterable[str] = ()) -> dict[str, Any]:
    """The ``m.mentions`` of an event the bot sends: empty (notifies nobody) unless it
    names users on purpose; ``room`` is never set."""
    wanted = sorted({u for u in user_ids if USER_ID.fullmatch(u)})
    return {"user_ids": wanted} if wanted else {}


def mentioned_user(href: str) -> str | None:
    """The Matrix user id a link points to (a mention "pill"), or None.

    Both forms of the spec's Matrix URIs are read: ``https://matrix.to/#/@user:server``
    (percent-encoded or not, with or without ``?via=``) and ``matrix:u/user:server``.
    """
    href = href.strip()
    try:
        parts = urlsplit(href)
    except ValueError:
        return None
    candidate = None
    if parts.scheme == "https" and parts.netloc.lower() == "matrix.to":
        fragment = parts.fragment.removeprefix("/").split("?", 1)[0]
        candidate = unquote(fragment)
    elif parts.scheme == "matrix" and parts.path.startswith("u/"):
        candidate = "@" + unquote(parts.path[2:].split("/", 1)[0])
    if candidate and USER_ID.fullmatch(candidate):
        return candidate
    return None


# -- edits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """A Matrix edit: which event it replaces and the new content."""

    replaces: str  # event id of the original
    new_content: dict[str, Any]


def parse_edit(content: Mapping[str, Any]) -> Edit | None:
    """The edit that ``content`` (a decrypted event's content) carries, or None when it
    is not a well-formed edit (no ``m.replace`` relation, no event id, or no
    ``m.new_content`` with a text body)."""
    rel = content.get("m.relates_to")
    if not isinstance(rel, Mapping) or rel.get("rel_type") != "m.replace":
        return None
    target = rel.get("event_id")
    new = content.get("m.new_content")
    if not isinstance(target, str) or not target.startswith("$") or not isinstance(new, Mapping):
        return None
    if not isinstance(new.get("body"), str) or not isinstance(new.get("msgtype"), str):
        return None
    return Edit(target, {k: v for k, v in new.items() if k != "m.relates_to"})


def edit_problem(original: Mapping[str, Any], edit: Mapping[str, Any]) -> str | None:
    """Why ``edit`` (an event) may not replace ``original`` (an event), as a reason code,
    or None when it may (spec, "Validity of replacement events")."""
    if original.get("room_id") != edit.get("room_id"):
        return "edit-other-room"
    if original.get("sender") != edit.get("sender"):
        return "edit-not-author"
    if original.get("type") != edit.get("type") or "state_key" in original:
        return "edit-other-type"
    rel = (original.get("content") or {}).get("m.relates_to") or {}
    if isinstance(rel, Mapping) and rel.get("rel_type") == "m.replace":
        return "edit-of-edit"
    return None


def edit_content(
    replaces: str, new_content: Mapping[str, Any], notify: Iterable[str] = ()
) -> dict[str, Any]:
    """The content of an edit event that replaces ``replaces`` with ``new_content``.

    The top level is the fallback for clients without edits ("* " and the new text); its
    ``m.mentions`` is empty unless ``notify`` names users to notify *again*, while the
    ``m.mentions`` inside ``m.new_content`` is that of the final text (spec, "Edits of
    events with mentions"). Relations in ``new_content`` are ignored by the spec and
    dropped here.
    """
    new = {k: v for k, v in new_content.items() if k != "m.relates_to"}
    new.setdefault("m.mentions", {})
    out: dict[str, Any] = {
        "msgtype": new.get("msgtype", "m.text"),
        "body": EDIT_FALLBACK_PREFIX + str(new.get("body", "")),
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": replaces},
        "m.mentions": mentions(notify),
    }
    if new.get("format") == "org.matrix.custom.html" and "formatted_body" in new:
        out["format"] = "org.matrix.custom.html"
        out["formatted_body"] = EDIT_FALLBACK_PREFIX + str(new["formatted_body"])
    return out


# -- corrections by mail -----------------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    """A mail that says it corrects an earlier message: the Message-ID it names."""

    corrects: str  # Message-ID, with angle brackets
    by: str  # "supersedes" (the header) or "subject" (the [correction] tag)


def parse_correction(
    subject: str, supersedes: str | None, in_reply_to: Iterable[str]
) -> Correction | None:
    """Whether a mail corrects an earlier message, and which one.

    A ``Supersedes:`` header names it; else a ``[correction]`` (or ``[corrected]``) tag in
    the subject makes the mail a correction of the message it replies to. All three values
    must come from the *signed* part of the mail: the envelope's headers are not covered
    by the signature, and the author check (``correction_problem``) rests on them.
    """
    if supersedes:
        found = _MSGID.findall(supersedes)
        if found:
            return Correction(found[0], "supersedes")
    if CORRECTION_TAG.search(subject):
        parents = list(in_reply_to)
        if parents:
            return Correction(parents[0], "subject")
    return None


def correction_problem(original_author: int, corrector: int) -> str | None:
    """Reason code when the corrector (member id) is not the original's author."""
    return None if original_author == corrector else "correction-not-author"


def without_correction_tag(subject: str) -> str:
    """The subject without its ``[correction]`` tag."""
    return re.sub(r"\s+", " ", CORRECTION_TAG.sub("", subject)).strip()


def correction_subject(subject: str) -> str:
    """The subject of a correction mail: the original's, marked ``[corrected]``."""
    return f"[corrected] {without_correction_tag(subject)}"


def correction_text(author_label: str, new_text: str, origin: str = "in the Matrix room") -> str:
    """The text of a correction mail: a plain statement, then the whole corrected text."""
    return (
        f"{author_label} corrected this message {origin}. The corrected text follows; it "
        f"replaces the earlier version (quoted in the thread).\n\n{new_text}"
    )


# -- redactions --------------------------------------------------------------------------


def redacted_event(event: Mapping[str, Any]) -> str | None:
    """The event id an ``m.room.redaction`` removes (room version 11 keeps it in the
    content, earlier versions at the top level)."""
    if event.get("type") != "m.room.redaction":
        return None
    content = event.get("content")
    target = content.get("redacts") if isinstance(content, Mapping) else None
    target = target or event.get("redacts")
    return target if isinstance(target, str) and target.startswith("$") else None


def retraction_subject(subject: str) -> str:
    return f"[withdrawn] {without_correction_tag(subject)}"


def retraction_text(author_label: str, origin: str = "in the Matrix room") -> str:
    """The text of a retraction notice. Mail cannot be unsent, and this says so."""
    return (
        f"{author_label} withdrew this message {origin}: it was removed from the room.\n\n"
        "Mail cannot be unsent: the copy you received stays in your mailbox. The author "
        "asks you to disregard it; please delete it and any copies you made. Do not act on "
        "its contents without asking the author."
    )


# -- reactions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaction:
    """An annotation: who reacted to which event with which key (an emoji, usually)."""

    event_id: str
    key: str


def parse_reaction(event: Mapping[str, Any]) -> Reaction | None:
    """The reaction an ``m.reaction`` event carries, or None when it is not one."""
    if event.get("type") != "m.reaction":
        return None
    rel = (event.get("content") or {}).get("m.relates_to")
    if not isinstance(rel, Mapping) or rel.get("rel_type") != "m.annotation":
        return None
    target, key = rel.get("event_id"), rel.get("key")
    if not isinstance(target, str) or not isinstance(key, str) or not key or len(key) > 100:
        return None
    return Reaction(target, key)
