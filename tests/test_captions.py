"""Which room events the Matrix runner decides now, and which file waits for its text.

``captions.plan`` is pure: inbox items in, units to decide and a wake-up time out. The
wiring (one post for the file and its text, on the real stack) is in test_relay.py and
tests/integration/test_caption_real.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from secir_bot.captions import Plan, Unit, plan
from secir_bot.model import Channel, InboxState
from secir_bot.store import InboxItem

ROOM = "!incidents:cap.test"
BOT = "@bot:cap.test"
WAIT = 20.0
T0 = 1_000_000.0  # when the first event came


def _item(
    n: int,
    content: dict[str, Any],
    sender: str = "@x:cap.test",
    at: float = 0.0,
    state: InboxState = InboxState.NEW,
    thread: str | None = None,
    kind: str = "m.room.message",
) -> InboxItem:
    content = dict(content)
    if thread is not None:
        content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread}
    event = {"type": kind, "event_id": f"$e{n}", "sender": sender, "content": content}
    return InboxItem(
        id=n,
        source=Channel.MATRIX,
        source_id=f"$e{n}",
        raw=json.dumps(event).encode(),
        meta={"room_id": ROOM},
        state=state,
        reason=None,
        post_uid=None,
        received_at=T0 + at,
    )


def _file(n: int, **kw: Any) -> InboxItem:
    body = {"msgtype": "m.file", "body": "capture.pcap", "filename": "capture.pcap"}
    return _item(n, body, **kw)


def _text(n: int, body: str = "pcap of the attack on ns1", **kw: Any) -> InboxItem:
    return _item(n, {"msgtype": "m.text", "body": body}, **kw)


def _parked(n: int, bare: bool = False, **kw: Any) -> InboxItem:
    """An event still encrypted; ``bare``: a caption-less file whose file is being fetched."""
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "..."}
    item = _item(n, content, state=InboxState.PARKED, kind="m.room.encrypted", **kw)
    return dataclasses.replace(item, meta={**item.meta, "bare_file": bare})


def _plan(
    items: list[InboxItem], now: float, wait: float = WAIT, refused: frozenset[str] = frozenset()
) -> Plan:
    return plan(items, ROOM, BOT, wait, T0 + now, lambda event_id: event_id not in refused)


def _ids(p: Plan) -> list[tuple[int, int | None]]:
    return [(u.item.id, u.caption.id if u.caption else None) for u in p.units]


def test_a_file_and_its_senders_next_text_in_the_thread_are_one_unit() -> None:
    p = _plan([_file(1, thread="$t"), _text(2, at=5, thread="$t")], now=6)
    assert _ids(p) == [(1, 2)]
    assert p.due is None


def test_a_file_waits_from_its_own_arrival_and_nobody_else_waits_behind_it() -> None:
    items = [
        _file(1),
        _text(2, "urgent: ns2 down", sender="@y:cap.test", at=1),
        _text(3, "in another thread", at=2, thread="$other"),
    ]
    p = _plan(items, now=3)
    assert _ids(p) == [(2, None), (3, None)]
    assert p.due == T0 + WAIT  # from the file's time, not from now (a restart resumes it)


def test_the_senders_later_events_in_the_thread_stay_behind_a_file_being_fetched() -> None:
    items = [_parked(1, bare=True), _text(2, at=1), _text(3, sender="@y:cap.test", at=1)]
    p = _plan(items, now=2)
    assert _ids(p) == [(3, None)]
    assert p.due == T0 + WAIT
    # Not after the wait: the text goes alone (and the file, once fetched, alone too).
    assert _ids(_plan(items, now=WAIT + 1)) == [(2, None), (3, None)]
    # Nothing else that is parked (a captioned file, an event without its key) holds.
    other = [_parked(1), _text(2, at=1)]
    assert _ids(_plan(other, now=2)) == [(2, None)]


def test_when_the_wait_is_over_the_file_goes_alone() -> None:
    assert _ids(_plan([_file(1)], now=WAIT + 0.1)) == [(1, None)]
    # Also when its text is there but came after the wait (the runner was busy).
    late = [_file(1), _text(2, at=WAIT + 5)]
    assert _ids(_plan(late, now=WAIT + 6)) == [(1, None), (2, None)]
    # Or when the text is not decrypted yet as the wait ends.
    assert _ids(_plan([_file(1), _parked(2, at=3)], now=WAIT + 1)) == [(1, None)]


def test_a_text_still_parked_is_waited_for() -> None:
    p = _plan([_file(1), _parked(2, at=1)], now=2)
    assert _ids(p) == [] and p.due == T0 + WAIT


def test_a_command_another_file_or_an_edit_next_sends_the_file_alone() -> None:
    command = [_file(1), _text(2, "!help", at=1)]
    assert _ids(_plan(command, now=2)) == [(1, None), (2, None)]
    two = [_file(1), _file(2, at=1)]
    p = _plan(two, now=2)
    assert _ids(p) == [(1, None)]  # the second file waits for its own text
    assert p.due == T0 + 1 + WAIT
    edit = _item(
        2,
        {
            "msgtype": "m.text",
            "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"},
        },
        at=1,
    )
    assert _ids(_plan([_file(1), edit], now=2)) == [(1, None), (2, None)]
    notice = _item(2, {"msgtype": "m.notice", "body": "bot-like"}, at=1)
    assert _ids(_plan([_file(1), notice], now=2)) == [(1, None), (2, None)]


def test_a_text_decided_before_the_file_ends_its_wait() -> None:
    # The text overtook a file that was fetched for longer than the wait.
    decided = _text(2, at=1, state=InboxState.RELAYED)
    assert _ids(_plan([_file(1), decided], now=WAIT + 3)) == [(1, None)]


def test_captioned_files_the_bots_own_and_other_rooms_never_wait() -> None:
    captioned = _item(1, {"msgtype": "m.image", "body": "the graph", "filename": "g.png"})
    own = _file(2, sender=BOT)
    elsewhere = _file(3)
    elsewhere = InboxItem(**{**elsewhere.__dict__, "meta": {"room_id": "!dm:cap.test"}})
    p = _plan([captioned, own, elsewhere], now=1)
    assert _ids(p) == [(1, None), (2, None), (3, None)] and p.due is None


def test_a_refused_file_never_waits() -> None:
    # Too large, or not encrypted: its sender hears of it at once; the text goes alone.
    items = [_file(1), _text(2, at=1)]
    assert _ids(_plan(items, now=2, refused=frozenset({"$e1"}))) == [(1, None), (2, None)]


def test_zero_turns_the_wait_off() -> None:
    items = [_file(1), _text(2, at=1)]
    assert _ids(_plan(items, now=2, wait=0)) == [(1, None), (2, None)]


def test_a_text_taken_as_a_caption_is_not_decided_again() -> None:
    items = [_file(1), _text(2, at=1), _text(3, "and more", at=2)]
    assert _ids(_plan(items, now=3)) == [(1, 2), (3, None)]
    assert Unit(items[0], items[1]) == _plan(items, now=3).units[0]


def test_a_reaction_between_the_file_and_its_text_neither_ends_the_wait_nor_captions() -> None:
    react = _item(
        2,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$other", "key": "✅"}},
        at=2,
        kind="m.reaction",
    )
    held = _plan([_file(1), react], now=3)
    assert _ids(held) == [] and held.due == T0 + WAIT
    p = _plan([_file(1), react, _text(3, at=4)], now=5)
    assert _ids(p) == [(1, 3), (2, None)]  # the reaction after the file, not lost
