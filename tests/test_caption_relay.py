"""A caption-less room file and its sender's next text become one post (real gpg and store,
no servers): the Matrix inbox runner holds the file, the decider makes one post of both.

The same on the real stack, mail member side included: tests/integration/test_caption_real.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from secir_bot.app import decider
from secir_bot.crypto import Keyring
from secir_bot.inbox import Decider
from secir_bot.members import MemberRequest, add_member
from secir_bot.model import Channel, InboxState, LinkKind
from secir_bot.runner import InboxRunner
from secir_bot.sandbox.world import offline_config
from secir_bot.steps import Services
from secir_bot.store import InboxItem, Store, StoredMedia

X, Y = "@x:cap.test", "@y:cap.test"
PCAP = bytes(range(256)) * 8


class Setup:
    def __init__(self, root: Path, wait: float) -> None:
        config = offline_config(root, "cap.test")
        self.config = dataclasses.replace(
            config, matrix=dataclasses.replace(config.matrix, caption_wait_seconds=wait)
        )
        self.store = Store.open(self.config.store_path, create=True)
        self.ring = Keyring.create(self.config.store_path / "gnupg")
        self.room = self.config.matrix.incident_room
        self.deciders: list[Decider] = []
        for n, who in enumerate((X, Y)):
            self.store.members.add(
                tld="nl",
                tld_display=".nl",
                name=f"M{n}",
                email=f"m{n}@cap.test",
                fingerprint=f"{n}B" * 20,
                matrix_id=who,
                channels=frozenset({Channel.MATRIX}),
            )

    async def decider(self) -> Decider:
        """The decider, with one member on the list by mail (to have list mail)."""
        fpr = await self.ring.generate("list", "list@cap.test")
        home = Path(tempfile.mkdtemp(prefix="capm"))
        ring = Keyring.create(home)
        try:
            key = await ring.export_public(await ring.generate("Mail", "mail@cap.test"))
        finally:
            ring.close()
            shutil.rmtree(home, ignore_errors=True)
        request = MemberRequest(
            tld="be", name="Mail", email="mail@cap.test", rank=1, key=key, channels="email"
        )
        await add_member(self.store, self.ring, request)
        made = decider(Services(self.config, self.store, self.ring, fpr, "@bot:cap.test"))
        self.deciders.append(made)  # stopped at the end (list mail still being made)
        return made

    def event(self, event_id: str, sender: str, content: dict[str, Any]) -> InboxItem:
        raw = {"type": "m.room.message", "event_id": event_id, "sender": sender}
        facts = {"room_id": self.room, "encrypted": True, "device": "trusted"}
        data = json.dumps({**raw, "content": content}).encode()
        item, _ = self.store.inbox.accept(Channel.MATRIX, event_id, data, facts)
        return item

    def file(self, event_id: str, sender: str = X) -> InboxItem:
        self.store.media.put(
            StoredMedia(event_id, "capture.pcap", "application/x-pcap", PCAP, None)
        )
        body = {"msgtype": "m.file", "body": "capture.pcap", "filename": "capture.pcap"}
        return self.event(event_id, sender, body)

    def text(self, event_id: str, body: str, sender: str = X) -> InboxItem:
        return self.event(event_id, sender, {"msgtype": "m.text", "body": body})


async def _setup(wait: float) -> AsyncIterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix="cap"))
    s = Setup(root, wait)
    try:
        yield s
    finally:
        for made in s.deciders:
            await made.aclose()
        s.ring.close()
        s.store.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[Setup]:
    async for s in _setup(600.0):  # longer than any test: only its text ends the wait
        yield s


def _post_of(setup: Setup, event_id: str) -> str:
    post = setup.store.posts.for_link(LinkKind.EVENT, event_id)
    assert post is not None, event_id
    return post.uid


async def test_a_file_and_the_text_after_it_are_one_post_and_others_do_not_wait(
    setup: Setup,
) -> None:
    runner = InboxRunner(setup.store, await setup.decider(), Channel.MATRIX, lambda: None)
    running = asyncio.create_task(runner.run())
    try:
        file = setup.file("$file")
        urgent = setup.text("$urgent", "ns2 is down too", sender=Y)
        runner.wake()
        assert (await asyncio.wait_for(runner.decided(urgent.id), 60)).state == "relayed"
        # Decided while the file waits for its sender's text (600 s).
        assert setup.store.inbox.state(file.id)[0] == InboxState.NEW
        text = setup.text("$text", "pcap of the attack on ns1, 10:02-10:05 UTC")
        runner.wake()
        assert (await asyncio.wait_for(runner.decided(file.id), 60)).state == "relayed"
        assert (await asyncio.wait_for(runner.decided(text.id), 60)).state == "relayed"
        await asyncio.wait_for(runner.decider.list_mail.idle(), 60)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    uid = _post_of(setup, "$file")
    assert _post_of(setup, "$text") == uid  # a reply, edit or redaction of either finds it
    post = setup.store.posts.get(uid)
    assert post is not None and post.body == "pcap of the attack on ns1, 10:02-10:05 UTC"
    assert setup.store.inbox.item(Channel.MATRIX, "$text").post_uid == uid  # type: ignore[union-attr]
    decided = {r.post_uid for r in setup.store.outbox.due(Channel.EMAIL, now=float("inf"))}
    assert decided == {uid, _post_of(setup, "$urgent")}  # two posts, no third for the text


async def test_a_file_of_a_blocked_type_is_refused_at_once_and_its_text_goes_alone(
    setup: Setup,
) -> None:
    """A program is refused whatever its caption: its sender hears so at once, not after
    the caption wait (600 s here), and the text typed after it is a post of its own."""
    runner = InboxRunner(setup.store, await setup.decider(), Channel.MATRIX, lambda: None)
    running = asyncio.create_task(runner.run())
    try:
        program = b"MZ\x90\x00" + bytes(300)  # a Windows executable, by its first bytes
        setup.store.media.put(
            StoredMedia("$exe", "patch.exe", "application/octet-stream", program, None)
        )
        file = setup.event(
            "$exe", X, {"msgtype": "m.file", "body": "patch.exe", "filename": "patch.exe"}
        )
        runner.wake()
        refused = await asyncio.wait_for(runner.decided(file.id), 60)
        assert refused.state == "rejected"
        assert "patch.exe" in (setup.store.inbox.state(file.id)[1] or "")
        text = setup.text("$text", "the vendor's fix for the resolver, run it on ns1")
        runner.wake()
        assert (await asyncio.wait_for(runner.decided(text.id), 60)).state == "relayed"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    post = setup.store.posts.get(_post_of(setup, "$text"))
    assert post is not None and post.body == "the vendor's fix for the resolver, run it on ns1"
    assert setup.store.posts.for_link(LinkKind.EVENT, "$exe") is None


async def test_an_edit_of_the_caption_corrects_the_one_post(setup: Setup) -> None:
    decider_ = await setup.decider()
    file, text = setup.file("$file"), setup.text("$text", "pcap of ns1")
    assert (await decider_.decide(file, text)).state == "relayed"
    edit = setup.event(
        "$edit",
        X,
        {
            "msgtype": "m.text",
            "body": "* pcap of ns2",
            "m.new_content": {"msgtype": "m.text", "body": "pcap of ns2"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$text"},
        },
    )
    assert (await decider_.decide(edit)).state == "relayed"
    correction = setup.store.posts.for_link(LinkKind.EVENT, "$edit")
    assert correction is not None and correction.parent_uid == _post_of(setup, "$file")


async def test_a_text_from_an_untrusted_device_is_not_taken_as_the_caption(setup: Setup) -> None:
    decider_ = await setup.decider()
    file = setup.file("$file")
    raw = {"type": "m.room.message", "event_id": "$odd", "sender": X}
    content = {"msgtype": "m.text", "body": "from a new laptop"}
    facts = {"room_id": setup.room, "encrypted": True, "device": "unverified"}
    odd, _ = setup.store.inbox.accept(
        Channel.MATRIX, "$odd", json.dumps({**raw, "content": content}).encode(), facts
    )
    assert (await decider_.decide(file, odd)).state == "relayed"
    post = setup.store.posts.get(_post_of(setup, "$file"))
    assert post is not None and post.body == "File: capture.pcap"
    assert setup.store.inbox.state(odd.id)[0] == InboxState.NEW  # refused on its own next


async def test_after_a_restart_the_wait_counts_from_the_files_arrival() -> None:
    async for setup in _setup(600.0):
        file = setup.file("$file")
        # The bot stopped just after the file came, 700 s ago: its wait is over (begun
        # again at the start, it would last beyond the test's ceiling).
        setup.store.db.execute(
            "UPDATE inbox SET received_at = ? WHERE id = ?", [time.time() - 700, file.id]
        )
        setup.store.db.conn.commit()
        runner = InboxRunner(setup.store, await setup.decider(), Channel.MATRIX, lambda: None)
        running = asyncio.create_task(runner.run())
        try:
            outcome = await asyncio.wait_for(runner.decided(file.id), 60)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert outcome.state == "relayed"
        post = setup.store.posts.get(_post_of(setup, "$file"))
        assert post is not None and post.body == "File: capture.pcap"


async def test_the_wait_ends_by_the_runners_timer_without_any_other_wake() -> None:
    async for setup in _setup(0.5):
        runner = InboxRunner(setup.store, await setup.decider(), Channel.MATRIX, lambda: None)
        file = setup.file("$file")
        running = asyncio.create_task(runner.run())
        try:
            # Nothing else comes: only the runner's own timer can end the wait.
            outcome = await asyncio.wait_for(runner.decided(file.id), 60)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert outcome.state == "relayed"
        post = setup.store.posts.get(_post_of(setup, "$file"))
        assert post is not None and post.body == "File: capture.pcap"
