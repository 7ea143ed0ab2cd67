"""Whom a relayed post notifies in the room (``bridges/matrix/compose.py``): the author of
the post it answers, as a native Element reply does, and nobody else. Real SQLite store;
the contents are the renderer's payloads as the outbox delivers them."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secir_bot.bridges.matrix.compose import outgoing_content
from secir_bot.bridges.matrix.render import MatrixRenderer
from secir_bot.model import Channel, File, LinkKind, Member, Post
from secir_bot.store import Store

ROOM = "!incident:test"
ERIN = "@erin:test"


@pytest.fixture
def store() -> Iterator[Store]:
    d = Path(tempfile.mkdtemp(prefix="rm"))
    s = Store.open(d / "store", create=True)
    yield s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def member(store: Store, name: str, matrix_id: str | None) -> Member:
    channels = {Channel.EMAIL} | ({Channel.MATRIX} if matrix_id else set())
    return store.members.add(
        tld=name[:2],
        tld_display="." + name[:2],
        name=name.title(),
        email=f"{name}@nic.test",
        fingerprint=name[:2].encode().hex().upper() * 10,
        matrix_id=matrix_id,
        channels=frozenset(channels),
    )


def record(store: Store, post: Post, event: str | None) -> None:
    """``post`` accepted and, when ``event`` is given, already in the room as that event."""
    item, _ = store.inbox.accept(Channel.EMAIL, f"<{post.uid}@nic.test>", b"raw")
    links = [(LinkKind.EVENT, event)] if event else []
    store.decide(item.id, "relayed", post=post, links=links)


def post(author: Member, uid: str, parent: str | None = None, root: str | None = None) -> Post:
    return Post(
        uid=uid,
        origin=Channel.EMAIL,
        author=author,
        subject="Glue records",
        body="Checked ns1, it is fine.",
        parent_uid=parent,
        root_uid=root,
        files=(File("zone.csv", "text/csv", b"a,b\n"),),
    )


def sent(store: Store, answer: Post) -> dict[str, Any]:
    """The content of ``answer``'s text as the Matrix bridge sends it."""
    record(store, answer, None)
    delivery = MatrixRenderer().post(answer, ROOM)
    return outgoing_content(store, json.loads(delivery.payload), delivery.post_uid)


@pytest.fixture
def people(store: Store) -> tuple[Member, Member, Member]:
    """Erin (Matrix), Bob and Dave (mail only, no Matrix ID)."""
    return member(store, "erin", ERIN), member(store, "bob", None), member(store, "dave", None)


def test_a_mail_answering_a_matrix_members_post_mentions_her(
    store: Store, people: tuple[Member, Member, Member]
) -> None:
    erin, bob, _ = people
    record(store, post(erin, "e1"), "$erin")
    content = sent(store, post(bob, "b1", parent="e1", root="e1"))
    assert content["m.mentions"] == {"user_ids": [ERIN]}
    assert content["m.relates_to"]["m.in_reply_to"] == {"event_id": "$erin"}


def test_an_answer_deeper_in_the_thread_mentions_the_answered_author_only(
    store: Store, people: tuple[Member, Member, Member]
) -> None:
    erin, bob, dave = people
    record(store, post(dave, "d1"), "$dave")
    record(store, post(erin, "e1", parent="d1", root="d1"), "$erin")
    content = sent(store, post(bob, "b1", parent="e1", root="d1"))
    assert content["m.mentions"] == {"user_ids": [ERIN]}
    assert content["m.relates_to"]["event_id"] == "$dave"


@pytest.mark.parametrize(
    "case", ["no parent", "parent not in the room", "own post", "author without Matrix ID"]
)
def test_other_posts_in_a_thread_ping_nobody(
    store: Store, people: tuple[Member, Member, Member], case: str
) -> None:
    erin, bob, dave = people
    record(store, post(erin, "e1"), "$erin")
    record(store, post(erin, "e2", parent="e1", root="e1"), None)  # never reached the room
    record(store, post(bob, "b0", parent="e1", root="e1"), "$bob")
    record(store, post(dave, "d1", parent="e1", root="e1"), "$dave")
    parent = {
        "no parent": None,
        "parent not in the room": "e2",
        "own post": "b0",
        "author without Matrix ID": "d1",
    }[case]
    content = sent(store, post(bob, "b1", parent=parent, root="e1"))
    assert content["m.relates_to"]["rel_type"] == "m.thread"
    assert content["m.mentions"] == {}


def test_the_files_of_an_answer_ping_nobody(
    store: Store, people: tuple[Member, Member, Member]
) -> None:
    erin, bob, _ = people
    record(store, post(erin, "e1"), "$erin")
    answer = post(bob, "b1", parent="e1", root="e1")
    record(store, answer, "$answer")
    for delivery in MatrixRenderer().files(answer, ROOM):
        content = outgoing_content(store, json.loads(delivery.payload), delivery.post_uid)
        assert content["m.relates_to"]["m.in_reply_to"] == {"event_id": "$answer"}
        assert content["m.mentions"] == {}


def test_a_correction_of_an_answer_keeps_the_mention_without_pinging_again(
    store: Store, people: tuple[Member, Member, Member]
) -> None:
    erin, bob, _ = people
    record(store, post(erin, "e1"), "$erin")
    record(store, post(bob, "b1", parent="e1", root="e1"), "$answer")
    fixed = Post(
        uid="b2",
        origin=Channel.EMAIL,
        author=bob,
        subject="[corrected] Glue records",
        body="Checked ns2 too.",
        parent_uid="b1",
        root_uid="e1",
        corrects="b1",
    )
    content = sent(store, fixed)
    assert content["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$answer"}
    assert content["m.mentions"] == {}
    assert content["m.new_content"]["m.mentions"] == {"user_ids": [ERIN]}


def test_a_notice_pings_nobody(store: Store) -> None:
    delivery = MatrixRenderer().notice(ROOM, "Bob Tanaka (.jp) joined the list.")
    content = outgoing_content(store, json.loads(delivery.payload), delivery.post_uid)
    assert content["m.mentions"] == {}
