"""A list mail made after a stop (``Decider.resume``) is the one the bot would have made
without it: the post's files, formatted text and correction form included (real gpg, no
servers; the list mail's backend, a seam we own, held by the test to stop in between)."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import json
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest_asyncio
from relay_support import (
    HeldBackend,
    Setup,
    add_matrix_member,
    decider_of,
    hold_mail,
    queued,
    relay_setup,
)

from secir_bot.inbox import MAIL_PENDING
from secir_bot.listmail import pending_post
from secir_bot.model import Channel, LinkKind, Member, Post
from secir_bot.sandbox.operators import wait_until
from secir_bot.store import InboxItem, StoredMedia

MX = "@mx:resume.test"
SHOT = bytes(range(256)) * 40 + b"\x00\xff defacement screenshot"


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[Setup]:
    async with relay_setup() as s:
        yield s


def _event(setup: Setup, event_id: str, content: dict[str, Any]) -> InboxItem:
    """Mx's event in the incident room (encrypted, a trusted device), received."""
    event = {"type": "m.room.message", "event_id": event_id, "sender": MX, "content": content}
    facts = {"room_id": setup.config.matrix.incident_room, "encrypted": True, "device": "trusted"}
    item, _ = setup.store.inbox.accept(Channel.MATRIX, event_id, json.dumps(event).encode(), facts)
    return item


async def _mail_of(setup: Setup, event_id: str) -> EmailMessage:
    """Member m0's list mail of the post that ``event_id`` made, decrypted."""
    post = setup.store.posts.for_link(LinkKind.EVENT, event_id)
    assert post is not None, event_id
    (row,) = [r for r in queued(setup, Channel.EMAIL) if r.post_uid == post.uid]
    assert "m0@relay.test" in row.recipients
    outer = email.message_from_bytes(row.payload, policy=email.policy.default)
    assert outer.get_content_type() == "multipart/encrypted"
    cipher = outer.get_payload()[1].get_payload(decode=True)  # type: ignore[index, union-attr]
    assert isinstance(cipher, bytes)
    plain = await setup.members_ring.decrypt(cipher)
    assert plain.ok, plain.status
    inner = email.message_from_bytes(plain.data, policy=email.policy.default)
    assert isinstance(inner, EmailMessage)
    return inner


def _text(mail: EmailMessage, subtype: str) -> str:
    found = [p for p in mail.walk() if p.get_content_type() == f"text/{subtype}"]
    assert found, subtype
    return "".join(str(p.get_content()) for p in found)


async def test_a_list_mail_resumed_after_a_stop_has_the_files_formatting_and_correction(
    setup: Setup,
) -> None:
    # Room posts written with formatting are mailed with an HTML part too.
    lst = dataclasses.replace(setup.config.list, html_alternative=True)
    setup.config = dataclasses.replace(setup.config, list=lst)
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(2)
    add_matrix_member(setup, MX)
    processor = decider_of(setup, list_fpr)
    original = _event(setup, "$orig", {"msgtype": "m.text", "body": "ns1 answers SERVFAIL"})
    assert (await processor.decide(original)).state == "relayed"
    await asyncio.wait_for(processor.list_mail.idle(), 60)  # mailed before the stop

    held = HeldBackend(setup.ring)  # no list mail is made from here until the stop
    hold_mail(processor, held)
    setup.store.media.put(StoredMedia("$shot", "shot.png", "image/png", SHOT, None))
    file = _event(setup, "$shot", {"msgtype": "m.image", "body": "shot.png"})
    formatted = _event(
        setup,
        "$fmt",
        {
            "msgtype": "m.text",
            "body": "the defaced page is up again",
            "format": "org.matrix.custom.html",
            "formatted_body": "the <strong>defaced</strong> page is up again",
        },
    )
    edit = _event(
        setup,
        "$edit",
        {
            "msgtype": "m.text",
            "body": "* ns2 answers SERVFAIL",
            "m.new_content": {"msgtype": "m.text", "body": "ns2 answers SERVFAIL"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        },
    )
    for item in (file, formatted, edit):
        assert (await processor.decide(item)).state == "relayed"
    await wait_until(lambda: held.calls, 60, "the held list mail's encryption")
    await processor.aclose()  # the bot stops with the three list mails unmade
    assert len(setup.store.kv.prefixed(MAIL_PENDING)) == 3

    restarted = decider_of(setup, list_fpr)
    made = HeldBackend(setup.ring)
    made.go.set()
    hold_mail(restarted, made)
    await asyncio.wait_for(restarted.resume(), 120)
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}

    shot = await _mail_of(setup, "$shot")
    (part,) = [p for p in shot.walk() if p.get_filename() == "shot.png"]
    assert part.get_content_type() == "image/png"
    assert part.get_payload(decode=True) == SHOT  # byte for byte
    fmt = await _mail_of(setup, "$fmt")
    assert "<strong>defaced</strong>" in _text(fmt, "html")
    corrected = await _mail_of(setup, "$edit")
    assert "Mx (.nl) corrected this message in the Matrix room." in _text(corrected, "plain")
    assert "ns2 answers SERVFAIL" in _text(corrected, "plain")


def test_a_mark_written_before_files_were_kept_still_gives_its_notes() -> None:
    author = Member(1, "nl", ".nl", "M", "m@x", "A" * 40, None, frozenset({Channel.EMAIL}))
    stored = Post(uid="u", origin=Channel.EMAIL, author=author, subject="s", body="b")
    post = pending_post(stored, json.dumps(["forwarded by a member"]))
    assert post.notes == ("forwarded by a member",) and post.files == ()
