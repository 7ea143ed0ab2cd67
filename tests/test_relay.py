"""Deciding inbox items, fan-out composition and subject handling (real gpg, no servers)."""

from __future__ import annotations

import asyncio
import email
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest
import pytest_asyncio
from relay_support import (
    HeldBackend,
    Setup,
    add_matrix_member,
    decided_and_mailed,
    decider_of,
    hold_mail,
    queued,
    relay_setup,
    signed_mail,
)

from secir_bot.crypto import Keyring
from secir_bot.inbox import MAIL_PENDING, Decider
from secir_bot.model import Channel, InboxState, LinkKind, Outcome, Post
from secir_bot.runner import InboxRunner
from secir_bot.sandbox.operators import wait_until
from secir_bot.store import InboxItem, OutboxRow
from secir_bot.threads import clean_subject, first_line, is_placeholder, strip_reply_fallback


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("[SECIR] Re: DDoS", "Re: DDoS"),
        ("Re: [SECIR] DDoS", "Re: DDoS"),
        ("[secir] [TLP:AMBER] Hijack of .xx", "[TLP:AMBER] Hijack of .xx"),
        ("[OTHER] note", "[OTHER] note"),
    ],
)
def test_only_the_lists_own_tag_is_removed(raw: str, clean: str) -> None:
    assert clean_subject(raw, "SECIR") == clean


@pytest.mark.parametrize(
    ("subject", "placeholder"),
    [
        ("...", True),
        ("Re: ...", True),
        ("encrypted message", True),
        ("Re: encrypted message", True),
        ("", True),
        ("Re: outage", False),
    ],
)
def test_placeholder_subjects(subject: str, placeholder: bool) -> None:
    assert is_placeholder(subject) is placeholder


def test_reply_fallback_is_stripped_and_first_line_is_short() -> None:
    body = "> <@alice:x> original\n> more\n\nmy answer"
    assert strip_reply_fallback(body) == "my answer"
    assert strip_reply_fallback("> quoted by hand\ntext") == "> quoted by hand\ntext"
    assert first_line("\n\n  hello  \nworld") == "hello"
    assert first_line("x" * 100).endswith("…")
    assert len(first_line("x" * 100)) == 72


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[Setup]:
    async with relay_setup() as s:
        yield s


async def test_gpg_calls_per_post_do_not_grow_with_the_list(setup: Setup) -> None:
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    processor = decider_of(setup, list_fpr)
    calls = {}
    for size in (3, 15):
        await setup.add(size)
        post = Post(
            uid=f"p{size}", origin=Channel.MATRIX, author=setup.members[0], subject="s", body="b"
        )
        before = setup.ring.calls
        deliveries = await processor.fanout.deliveries(post)
        calls[size] = setup.ring.calls - before
        assert len(deliveries) == 1
        assert len(deliveries[0].recipients) == size - 1  # no echo to the author
    assert calls[3] == calls[15] <= 2


async def test_an_item_that_keeps_killing_the_bot_is_shunted(setup: Setup) -> None:
    from secir_bot.inbox import MAX_ATTEMPTS

    list_fpr = await setup.ring.generate("list", "list@relay.test")
    processor = decider_of(setup, list_fpr)
    item, _ = setup.store.inbox.accept("email", "<poison@relay.test>", b"From: x\r\n\r\nbody")
    for _ in range(MAX_ATTEMPTS):  # each start was cut short by a crash
        setup.store.inbox.begin_attempt(item.id)
    outcome = await processor.decide(item)
    assert outcome.state == "shunted"
    decided = setup.store.inbox.item("email", "<poison@relay.test>")
    assert decided is not None and decided.state == "shunted"
    assert "attempts" in (decided.reason or "")
    (notice,) = setup.store.outbox.due(Channel.MATRIX, now=float("inf"))
    assert b"set aside" in notice.payload


async def test_an_item_on_which_gpg_hangs_is_shunted_at_once(setup: Setup) -> None:
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.members_ring.import_key(await setup.ring.export_public(list_fpr))
    armored = await setup.members_ring.encrypt(b"\0" * 1_000_000, [list_fpr])
    raw = (
        b"From: someone@relay.test\r\nMessage-ID: <slow@relay.test>\r\n"
        b"Content-Type: text/plain\r\n\r\n" + armored
    )
    processor = decider_of(setup, list_fpr)
    item, _ = setup.store.inbox.accept("email", "<slow@relay.test>", raw)
    setup.ring.deadline = 0.001  # gpg cannot finish: as if it hung

    outcome = await processor.decide(item)

    assert outcome == Outcome("shunted", "gpg did not finish within 0.001 s")
    (notice,) = setup.store.outbox.due(Channel.MATRIX, now=float("inf"))
    assert b"gpg did not finish" in notice.payload


async def test_l1_a_crash_is_reported_by_type_never_by_its_text(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from secir_bot import mime

    def explode(raw: bytes) -> None:
        raise RuntimeError(raw.decode())  # as parsers do: quoting what they read

    monkeypatch.setattr(mime, "parse_envelope", explode)
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    processor = decider_of(setup, list_fpr)
    raw = b"From: x@y.test\r\n\r\nSECRET-DECRYPTED-TEXT"
    item, _ = setup.store.inbox.accept("email", "<l1@relay.test>", raw)

    outcome = await processor.decide(item)

    assert outcome == Outcome("shunted", "internal error (RuntimeError)")
    (notice,) = setup.store.outbox.due(Channel.MATRIX, now=float("inf"))
    assert b"SECRET" not in notice.payload
    assert "SECRET" not in caplog.text and "RuntimeError" in caplog.text


def test_d2_html_is_converted_only_after_the_signature_is_checked() -> None:
    from secir_bot.pipeline import EMAIL_STEPS

    names = [step.__name__ for step in EMAIL_STEPS.steps]
    assert names.index("size_limit") == 0  # before any parsing
    assert names.index("html_text") > names.index("signer_is_member") > names.index("signed")


async def test_a_signature_dated_in_the_future_is_refused(setup: Setup) -> None:
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(2)
    processor = decider_of(setup, list_fpr)
    now = int(time.time())

    ahead = await signed_mail(setup, list_fpr, now + 3600, b"an hour ahead\n")
    item, _ = setup.store.inbox.accept("email", "<ahead@relay.test>", ahead)
    outcome = await processor.decide(item)
    assert outcome.state == "rejected" and "in the future" in outcome.reason

    # A minute ahead is within list.max_clock_skew (600 s by default).
    close = await signed_mail(setup, list_fpr, now + 60, b"a minute ahead\n")
    item, _ = setup.store.inbox.accept("email", "<close@relay.test>", close)
    assert (await processor.decide(item)).state == "relayed"


async def test_a_matrix_reply_of_nothing_but_its_quote_is_refused_not_relayed_empty(
    setup: Setup,
) -> None:
    """Found in the relay cut: the policy steps run on every channel's messages, so a Matrix
    message whose whole body is the quoted fallback of older clients (no text of its own
    once that is removed) is refused like a mail without text, instead of going out as an
    empty post."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    add_matrix_member(setup)
    item = _room_post(setup, "$quote-only", "> <@x:relay.test> what was said\n> before")

    outcome = await decider_of(setup, list_fpr).decide(item)

    assert outcome == Outcome(InboxState.REJECTED, "the message has no readable text")
    assert setup.store.posts.for_link(LinkKind.EVENT, "$quote-only") is None


def _room_post(setup: Setup, event_id: str, body: str) -> InboxItem:
    """Mx's text ``body`` in the incident room (encrypted, a trusted device), received."""
    event = {
        "type": "m.room.message",
        "event_id": event_id,
        "sender": "@mx:relay.test",
        "content": {"msgtype": "m.text", "body": body},
    }
    facts = {"room_id": setup.config.matrix.incident_room, "encrypted": True, "device": "trusted"}
    item, _ = setup.store.inbox.accept(Channel.MATRIX, event_id, json.dumps(event).encode(), facts)
    return item


@dataclass
class HeldPost:
    """A member's post by mail being decided while the list's gpg backend is held."""

    list_fpr: str
    processor: Decider
    held: HeldBackend
    item: InboxItem
    deciding: asyncio.Task[Outcome]


async def _post_held(
    setup: Setup,
    message_id: str,
    *,
    members: int = 3,
    held: HeldBackend | None = None,
    group_size: int | None = None,
    on_queued: Callable[[], None] | None = None,
) -> HeldPost:
    """m0's "resolver down" to a list of ``members``, its decision started with the list
    mail made by ``held`` (by default all of it held), in groups of ``group_size``."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(members)
    processor = decider_of(setup, list_fpr)
    held = held or HeldBackend(setup.ring)
    hold_mail(processor, held, group_size)
    if on_queued is not None:
        processor.on_queued = on_queued
    raw = await signed_mail(setup, list_fpr, int(time.time()), b"resolver down\n")
    item, _ = setup.store.inbox.accept("email", message_id, raw)
    return HeldPost(
        list_fpr, processor, held, item, asyncio.create_task(decided_and_mailed(processor, item))
    )


async def _stop(post: HeldPost) -> None:
    """The bot stops while gpg works on the list mail (the app closes the decider)."""
    post.deciding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await post.deciding
    await post.processor.aclose()


async def _encryption_started(post: HeldPost) -> None:
    await wait_until(lambda: post.held.calls, 30, "the list mail's encryption to start")


async def test_i11_the_room_event_is_queued_before_the_list_mail_is_encrypted(
    setup: Setup,
) -> None:
    woken: list[bool] = []
    post = await _post_held(setup, "<held@relay.test>", on_queued=lambda: woken.append(True))
    await _encryption_started(post)

    (room,) = queued(setup, Channel.MATRIX)  # queued while gpg is held
    assert room.target == setup.config.matrix.incident_room and woken == [True]
    assert queued(setup, Channel.EMAIL) == []
    assert setup.store.inbox.state(post.item.id)[0] == "relayed"
    post.held.go.set()
    assert (await post.deciding).state == "relayed"
    (mail,) = queued(setup, Channel.EMAIL)
    assert sorted(mail.recipients) == ["m1@relay.test", "m2@relay.test"]
    assert mail.post_uid == room.post_uid
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}


async def test_i11_list_mail_left_unmade_by_a_stop_is_made_at_the_next_start(
    setup: Setup,
) -> None:
    post = await _post_held(setup, "<stop@relay.test>")
    await _encryption_started(post)
    await _stop(post)  # the bot stops while gpg works
    assert queued(setup, Channel.EMAIL) == [] and len(setup.store.kv.prefixed(MAIL_PENDING)) == 1

    restarted = decider_of(setup, post.list_fpr)
    await restarted.resume()

    (mail,) = queued(setup, Channel.EMAIL)
    assert sorted(mail.recipients) == ["m1@relay.test", "m2@relay.test"]
    assert len(queued(setup, Channel.MATRIX)) == 1  # the room event was not queued again
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}
    assert b"BEGIN PGP MESSAGE" in mail.payload


async def test_i11_a_list_mail_that_cannot_be_made_after_the_room_is_reported(
    setup: Setup,
) -> None:
    post = await _post_held(setup, "<fail@relay.test>")
    await _encryption_started(post)
    setup.ring.deadline = 0.001  # gpg cannot finish the list mail: as if it hung
    post.held.go.set()

    assert (await post.deciding).state == "relayed"
    assert queued(setup, Channel.EMAIL) == []
    room, notice = queued(setup, Channel.MATRIX)
    assert room.target == setup.config.matrix.incident_room
    assert notice.target == setup.config.matrix.control_room
    assert b"was not mailed to the list" in notice.payload and b"did not finish" in notice.payload
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}


async def test_i11_a_burst_is_decided_several_at_once_in_order_within_threads_and_senders(
    setup: Setup,
) -> None:
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(6)
    processor = decider_of(setup, list_fpr)
    now = int(time.time())
    for j in range(30):
        sender, thread = j % 5, (j * 7) % 4  # threads and senders interleaved
        raw = await signed_mail(
            setup,
            list_fpr,
            now,
            f"thread {thread} mail {j}\n".encode(),
            by=sender,
            header=f"References: <root-{thread}@relay.test>\r\n",
        )
        setup.store.inbox.accept("email", f"<burst-{j}@relay.test>", raw)
    active, most = 0, 0
    decide = processor.decide

    async def counting(item: InboxItem, caption: InboxItem | None = None) -> Outcome:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            return await decide(item, caption)
        finally:
            active -= 1

    processor.decide = counting  # type: ignore[method-assign]
    runner = InboxRunner(setup.store, processor, Channel.EMAIL, lambda: None, parallel=4)

    await runner._decide_pending()
    await processor.list_mail.idle()

    assert most > 1  # several mails were being decided at the same time
    assert setup.store.inbox.pending(Channel.EMAIL) == []
    room = [
        r for r in queued(setup, Channel.MATRIX) if r.target == setup.config.matrix.incident_room
    ]
    numbers = {}
    for row in room:
        found = re.search(rb"thread (\d) mail (\d+)", row.payload)
        assert found is not None
        numbers[row.post_uid] = int(found[2])
    assert sorted(numbers.values()) == list(range(30))  # none lost, none twice
    mail = [numbers[r.post_uid] for r in queued(setup, Channel.EMAIL) if r.post_uid]
    assert sorted(mail) == list(range(30))
    for order in ([numbers[r.post_uid] for r in room], mail):  # queue order, room and list
        for lane in [{j for j in range(30) if (j * 7) % 4 == t} for t in range(4)] + [
            {j for j in range(30) if j % 5 == s} for s in range(5)
        ]:
            within = [j for j in order if j in lane]
            assert within == sorted(within)


async def test_i11_a_replay_decided_at_the_same_time_as_its_original_is_not_relayed(
    setup: Setup,
) -> None:
    """Lanes come from the outer header, which a replay can change: the original and its
    replay may be decided at once. The store's one-row-per-signature rule still lets only
    one through (the other is refused or set aside, and the admins are told)."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(2)
    processor = decider_of(setup, list_fpr)
    raw = await signed_mail(setup, list_fpr, int(time.time()), b"pay to account 1\n")
    body = raw[raw.index(b"-----BEGIN PGP MESSAGE") :]
    for j in range(4):  # other sender address and thread each time, same signed message
        header = f"From: m0+{j}@relay.test\r\nMessage-ID: <replay-{j}@relay.test>\r\n\r\n"
        setup.store.inbox.accept("email", f"<replay-{j}@relay.test>", header.encode() + body)
    runner = InboxRunner(setup.store, processor, Channel.EMAIL, lambda: None, parallel=4)

    await runner._decide_pending()
    await processor.list_mail.idle()

    outcomes = [setup.store.inbox.state(i) for i in range(1, 5)]
    states = [state for state, _ in outcomes]
    assert states.count("relayed") == 1
    # Refused as what they are, never set aside as an internal error (IntegrityError).
    assert states.count("rejected") == 3, outcomes
    refused = [reason or "" for state, reason in outcomes if state == "rejected"]
    assert all("received before" in reason for reason in refused), outcomes
    assert len([r for r in queued(setup, Channel.EMAIL) if r.target == "list"]) == 1


async def test_i11_a_replay_that_passed_the_check_while_its_original_was_decided_is_refused(
    setup: Setup,
) -> None:
    """The replay check runs before the decision's commit: with mails decided at once, a
    replay may pass it while its original is still being decided. Its commit then meets the
    recorded signature and must end as the refusal it is (told to the sender), not as a
    shunt for an internal error. The race is made certain here by answering the check as
    it was answered before the original's commit."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(2)
    processor = decider_of(setup, list_fpr)
    raw = await signed_mail(setup, list_fpr, int(time.time()), b"pay to account 2\n")
    body = raw[raw.index(b"-----BEGIN PGP MESSAGE") :]
    for j in range(2):
        header = f"From: m0@relay.test\r\nMessage-ID: <race-{j}@relay.test>\r\n\r\n"
        setup.store.inbox.accept("email", f"<race-{j}@relay.test>", header.encode() + body)
    first, second = setup.store.inbox.pending(Channel.EMAIL)
    assert (await processor.decide(first)).state is InboxState.RELAYED

    setup.store.signatures.seen = lambda signer, signature_id: False  # type: ignore[method-assign]
    outcome = await processor.decide(second)
    await processor.list_mail.idle()

    assert outcome.state is InboxState.REJECTED, outcome
    assert "received before" in (setup.store.inbox.state(second.id)[1] or "")
    assert len([r for r in queued(setup, Channel.EMAIL) if r.target == "list"]) == 1


class PartlyHeldBackend(HeldBackend):
    """Encrypts the first ``free`` recipient groups at once and holds the others."""

    def __init__(self, ring: Keyring, free: int) -> None:
        super().__init__(ring)
        self.free = free

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        self.calls += 1
        if self.calls > self.free:
            await self.go.wait()
        return await self.ring.sign_encrypt(data, list(recipients), signer)


def _message_id(row: OutboxRow) -> str:
    return str(email.message_from_bytes(row.payload)["Message-ID"])


async def test_f_fanout_each_group_is_queued_as_made_and_a_stop_resumes_the_rest(
    setup: Setup,
) -> None:
    woken: list[bool] = []
    post = await _post_held(  # m0 posts; m1..m4 read the list, one recipient group each
        setup,
        "<groups@relay.test>",
        members=5,
        held=PartlyHeldBackend(setup.ring, free=2),
        group_size=1,
        on_queued=lambda: woken.append(True),
    )
    await wait_until(
        lambda: len(queued(setup, Channel.EMAIL)) == 2 and post.held.calls == 4,
        30,
        "two groups queued while the other two are still encrypted",
    )
    made = queued(setup, Channel.EMAIL)
    assert len(woken) == 3  # the room event, then each group's mail as it was queued
    await _stop(post)  # the bot stops while gpg works on the last two groups
    assert queued(setup, Channel.EMAIL) == made
    assert len(setup.store.kv.prefixed(MAIL_PENDING)) == 1

    restarted = decider_of(setup, post.list_fpr)
    counting = HeldBackend(setup.ring)
    counting.go.set()
    hold_mail(restarted, counting, group_size=1)
    await restarted.resume()

    rows = queued(setup, Channel.EMAIL)
    assert rows[:2] == made and len(rows) == 4
    assert counting.calls == 2  # only the groups not made before the stop
    assert sorted(r for row in rows for r in row.recipients) == [
        f"m{i}@relay.test" for i in range(1, 5)
    ]
    assert len({_message_id(row) for row in rows}) == 1
    assert all(b"BEGIN PGP MESSAGE" in row.payload for row in rows)
    assert len(queued(setup, Channel.MATRIX)) == 1  # the room event was not queued again
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}


async def test_f_fanout_a_group_that_fails_after_others_were_queued_is_reported_as_partial(
    setup: Setup,
) -> None:
    post = await _post_held(
        setup,
        "<partial@relay.test>",
        members=4,
        held=PartlyHeldBackend(setup.ring, free=1),
        group_size=1,
    )
    await wait_until(
        lambda: len(queued(setup, Channel.EMAIL)) == 1 and post.held.calls == 3,
        30,
        "one group queued while the other two are held",
    )
    setup.ring.deadline = 0.001  # gpg cannot finish the other groups: as if it hung
    post.held.go.set()

    assert (await post.deciding).state == "relayed"
    assert len(queued(setup, Channel.EMAIL)) == 1  # the group made before stays queued
    room, notice = queued(setup, Channel.MATRIX)
    assert room.target == setup.config.matrix.incident_room
    assert notice.target == setup.config.matrix.control_room
    assert b"mailed only to the members of the groups encrypted before" in notice.payload
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}


async def test_f_fanout_a_matrix_posts_groups_are_queued_one_by_one_after_the_decision(
    setup: Setup,
) -> None:
    """The benchmark's case: a Matrix post to the list's mail members used to commit all
    its groups with the decision; now its first group can be sent while gpg makes the
    others."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(3)
    add_matrix_member(setup)
    processor = decider_of(setup, list_fpr)
    held = PartlyHeldBackend(setup.ring, free=1)
    hold_mail(processor, held, group_size=1)
    item = _room_post(setup, "$groups", "resolver down")

    deciding = asyncio.create_task(decided_and_mailed(processor, item))
    await wait_until(
        lambda: len(queued(setup, Channel.EMAIL)) == 1 and held.calls == 3,
        30,
        "the first group queued while the other two are held",
    )
    assert setup.store.inbox.state(item.id)[0] == "relayed"
    held.go.set()

    assert (await deciding).state == "relayed"
    rows = queued(setup, Channel.EMAIL)
    assert sorted(r for row in rows for r in row.recipients) == [
        f"m{i}@relay.test" for i in range(3)
    ]
    assert queued(setup, Channel.MATRIX) == []  # a Matrix post is not sent back to the room
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}
