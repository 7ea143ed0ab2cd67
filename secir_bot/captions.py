"""A room file without a caption waits a little for the text its sender types next.

Element has no caption field: a responder uploads ``capture.pcap``, then types what it is.
Mail members should get one mail, that text as its body and the file attached. So the
Matrix inbox runner does not decide a caption-less file (``m.file``, ``m.image``,
``m.video``, ``m.audio`` whose body is only its name) at once: it *holds* it for
``matrix.caption_wait_seconds`` after it was received, until its sender's next event in the
same thread of the same room (the main timeline counting as one thread) is there.

- That next event is a plain text (``m.text`` or ``m.emote``, not a ``!command``, not an
  edit): the file and the text are decided together (``Unit.caption``), as one post whose
  body is the text; both events link to it.
- It is anything else, or nothing came in time: the file is decided alone, as before.
  A reaction is passed over: the sender's ✅ on someone else's post between the upload
  and the text neither ends the wait nor is a caption (it waits behind the file).

This is a planning step in front of the runner's round, and nothing else changes: every
event is in the inbox (durable) before anything is held, a held item is just left ``new``
and planned again at the next round, and the runner sleeps until it is woken (a new event)
or until the earliest wait ends (``Plan.due``), never in a busy loop. The wait is measured
from the items' own ``received_at``, so a restart resumes it rather than starting it again,
and a text that came after the wait ended is never taken as a caption, however late the
file is decided. Only the sender's own later events in that thread are held behind the
file (they keep their order); everyone else's, and the sender's in other threads, are
decided at once.

A caption-less file that is still parked while the bridge fetches it (it notes
``MatrixFacts.bare_file``, ``bridges/matrix/parked.py``) holds its sender's later events in
its thread too, for at most the same wait from its arrival, so that the text typed while a
large file downloads does not overtake it. Nothing else that is parked (a captioned file,
an event waiting for its room key) holds anything, as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from secir_bot.commands.parse import is_matrix_command
from secir_bot.model import MARKER, InboxState, MatrixFacts
from secir_bot.store import InboxItem

MEDIA = frozenset({"m.image", "m.file", "m.video", "m.audio"})
CAPTIONS = frozenset({"m.text", "m.emote"})  # a notice is never relayed, so no caption


def captioned(content: dict[str, Any]) -> bool:
    """Whether a file event carries its own caption: a body that is not its file name."""
    name = content.get("filename")
    return isinstance(name, str) and content.get("body") not in (None, "", name)


@dataclass(frozen=True)
class Unit:
    """What the runner decides in one go: an item, with the text that captions it."""

    item: InboxItem
    caption: InboxItem | None = None


@dataclass(frozen=True)
class Plan:
    units: list[Unit]
    due: float | None  # when the first held item's wait ends (the runner wakes then)


def _event(item: InboxItem) -> dict[str, Any]:
    try:
        event = json.loads(item.raw)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _content(event: dict[str, Any]) -> dict[str, Any]:
    content = event.get("content")
    return content if isinstance(content, dict) else {}


def key_of(item: InboxItem) -> tuple[str, str, str] | None:
    """(room, sender, thread root or "") of an event, parked (encrypted) or clear: the
    relation travels in the clear in both. None for what names no sender."""
    event = _event(item)
    sender = event.get("sender")
    if not isinstance(sender, str):
        return None
    rel = _content(event).get("m.relates_to")
    root = ""
    if isinstance(rel, dict) and rel.get("rel_type") == "m.thread":
        root = str(rel.get("event_id", ""))
    return (MatrixFacts.from_meta(item.meta).room_id, sender, root)


def waits(item: InboxItem, room: str, bot: str) -> bool:
    """A member's file without a caption, in the incident room: it may wait for its text
    (``plan`` asks too whether the file was had: a refused one never waits)."""
    event = _event(item)
    content = _content(event)
    rel = content.get("m.relates_to")
    return (
        MatrixFacts.from_meta(item.meta).room_id == room
        and event.get("type") == "m.room.message"
        and event.get("sender") != bot
        and content.get("msgtype") in MEDIA
        and MARKER not in content
        and not (isinstance(rel, dict) and rel.get("rel_type") == "m.replace")
        and not captioned(content)
    )


def reaction(item: InboxItem) -> bool:
    """A reaction (an annotation, encrypted or not): it neither captions a file nor ends
    its wait; it is decided after the file, as any later event of its sender's."""
    event = _event(item)
    rel = _content(event).get("m.relates_to")
    return event.get("type") == "m.reaction" or (
        isinstance(rel, dict) and rel.get("rel_type") == "m.annotation"
    )


def may_caption(item: InboxItem) -> bool:
    """A plain text event, by its form (the decider checks its sender and device)."""
    event = _event(item)
    content = _content(event)
    rel = content.get("m.relates_to")
    return (
        event.get("type") == "m.room.message"
        and content.get("msgtype") in CAPTIONS
        and MARKER not in content
        and not (isinstance(rel, dict) and rel.get("rel_type") == "m.replace")
        and not is_matrix_command(str(content.get("body", "")))
    )


def plan(
    items: Sequence[InboxItem],
    room: str,
    bot: str,
    wait: float,
    now: float,
    fetched: Callable[[str], bool],
) -> Plan:
    """The units to decide now, in order, and when to look again.

    ``items`` are the channel's items in order of arrival: every new and parked one, and
    every item (in any state) received after the oldest new one, so that a file's next
    event is found even when it was decided first. ``fetched`` says whether the file of a
    media event was had (``store.media``) and may be relayed: a file that is refused (too
    large, not encrypted, of a blocked type) is decided at once, so that its sender hears
    of it without delay."""
    keys = {item.id: key_of(item) for item in items}
    held: set[tuple[str, str, str]] = set()
    taken: set[int] = set()
    units: list[Unit] = []
    due: float | None = None

    def hold(key: tuple[str, str, str], until: float) -> None:
        nonlocal due
        held.add(key)
        due = until if due is None else min(due, until)

    for i, item in enumerate(items):
        key = keys[item.id]
        until = item.received_at + wait
        if item.state is InboxState.PARKED:
            if key is not None and now < until and MatrixFacts.from_meta(item.meta).bare_file:
                hold(key, until)  # a file without caption, being fetched
            continue
        if item.state is not InboxState.NEW or item.id in taken:
            continue
        if key is not None and key in held:
            continue
        if key is None or not waits(item, room, bot) or not fetched(item.source_id):
            units.append(Unit(item))
            continue
        after = next(
            (later for later in items[i + 1 :] if keys[later.id] == key and not reaction(later)),
            None,
        )
        if after is None or after.state is InboxState.PARKED:
            if now < until:
                hold(key, until)  # nothing yet, or not decrypted yet: wait on
            else:
                units.append(Unit(item))
            continue
        if after.state is InboxState.NEW and after.received_at <= until and may_caption(after):
            taken.add(after.id)
            units.append(Unit(item, after))
        else:
            units.append(Unit(item))
    return Plan(units, due)
