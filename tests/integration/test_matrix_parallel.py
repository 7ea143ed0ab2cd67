"""Issue 11, the burst: the room's events of different threads are sent at once
(``delivery.matrix_parallel``), each thread in order, on the real Synapse.

Three members each start a thread by mail and answer themselves three times. The bot's
Matrix sends are held (the Sender's lock, a seam we own) until all twelve room events are
queued, so that the outbox has the whole burst in one round; then a member's real client
must see every post once, each thread in order, each reply in its root's thread answering
the post before it, and the Sender must have had more than one send on its way at once.
"""

from __future__ import annotations

import asyncio
import itertools

from burst_world import relation

from secir_bot.sandbox.operators.base import SeenEvent, wait_until
from secir_bot.sandbox.world import DEFAULT_PEOPLE, Person, World

DAVE = Person("dave", "Dave Okafor", ".ng", matrix=False)
AUTHORS = ("alice", "bob", "dave")
POSTS_EACH = 4  # a thread's root and three answers


async def write_thread(world: World, author: str) -> None:
    """The author's root mail, then answers each to the one before (as a mail client
    threads them: In-Reply-To the last one, References all of them), each once the one
    before is decided."""
    op = world.mail[author]
    sent: list[str] = []
    for i in range(POSTS_EACH):
        subject = f"Thread of {author}" if i == 0 else f"Re: Thread of {author}"
        msgid = await op.send(
            world.list_address,
            world.list_fpr,
            subject,
            f"PAR-{author}-{i} in the burst",
            in_reply_to=sent[-1] if sent else None,
            references=tuple(sent),
        )
        sent.append(msgid)
        # Postfix may deliver two mails in either order: the next answer is written once
        # this one is a post (as a member answers what they have seen).
        await wait_until(
            lambda i=i: decided(world, f"PAR-{author}-{i} "), 120, f"PAR-{author}-{i} decided"
        )


def decided(world: World, token: str) -> bool:
    assert world.app is not None
    found = world.app.store.db.execute(
        "SELECT 1 FROM posts WHERE instr(body, ?) > 0", [token]
    ).fetchone()
    return found is not None


def room_posts_queued(world: World) -> int:
    assert world.app is not None
    (count,) = world.app.store.db.execute(
        "SELECT COUNT(*) FROM outbox WHERE channel = 'matrix' AND target = ? AND kind = 'post'",
        [world.incident_room],
    ).fetchone()
    return int(count)


async def test_i11_threads_reach_the_room_at_once_each_in_order(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup(people=(*DEFAULT_PEOPLE, DAVE))
    app = await world.start_bot()
    assert world.config is not None
    bot = world.config.matrix.user_id
    carol = world.mx["carol"]
    sender = app.matrix.sender
    total = len(AUTHORS) * POSTS_EACH

    async with sender._lock:  # no room event is encrypted (or sent) until the burst is queued
        sender.most_in_flight = sender.in_flight
        await asyncio.gather(*(write_thread(world, a) for a in AUTHORS))
        await wait_until(
            lambda: room_posts_queued(world) >= total, 180, "the burst's room events queued"
        )

    def burst() -> list[SeenEvent]:
        return [e for e in carol.events if e.sender == bot and "PAR-" in e.body]

    await wait_until(lambda: len(burst()) >= total, 120, "the burst in the room")
    await wait_until(lambda: not app.store.outbox.counts().get("pending"), 60, "the outbox emptied")
    seen = burst()
    bodies = [next(w for w in e.body.split() if w.startswith("PAR-")) for e in seen]
    # Nothing lost, nothing doubled.
    assert sorted(bodies) == sorted(f"PAR-{a}-{i}" for a in AUTHORS for i in range(POSTS_EACH))
    assert all(e.decrypted for e in seen)
    for author in AUTHORS:
        # The thread's posts in the room's order are the author's in the order written.
        thread = [e for e, b in zip(seen, bodies, strict=True) if b.startswith(f"PAR-{author}-")]
        order = [b for b in bodies if b.startswith(f"PAR-{author}-")]
        assert order == [f"PAR-{author}-{i}" for i in range(POSTS_EACH)], order
        root = thread[0]
        assert relation(root)["rel_type"] is None  # it starts its thread
        for before, reply in itertools.pairwise(thread):
            assert relation(reply) == {
                "rel_type": "m.thread",
                "root": root.event_id,
                "answers": before.event_id,
            }, (reply.body, relation(reply))
    # The threads' sends overlapped: more than one event was on its way at once.
    assert sender.most_in_flight >= 2, sender.most_in_flight
