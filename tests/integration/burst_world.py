"""The burst that ``test_killburst`` kills the bot in: its people and threads, its mails
queued in the list's inbox before the bot starts, and what the store, a member's Matrix
client and the members' mailboxes show of it."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import aioimaplib
from servers import MailStack

from secir_bot.bridges.email import close_imap
from secir_bot.inbox import MAIL_PENDING
from secir_bot.sandbox.operators import SeenEvent
from secir_bot.sandbox.world import Person, World

PEOPLE = (
    Person("bob", "Bob Silva", ".br", matrix=False),
    Person("dave", "Dave Okafor", ".ng", matrix=False),
    Person("erin", "Erin Walsh", ".ie", matrix=False),
    Person("carol", "Carol Tanaka", ".jp", email=False),  # reads the room with her own client
)
AUTHORS = ("bob", "dave", "erin")
TAG = re.compile(r"(KB-T\d\d-P\d\d) in the burst")


@dataclass(frozen=True)
class Burst:
    threads: int
    posts: int  # a thread's root and its answers
    kills: int
    matrix_parallel: int | None = None  # delivery.matrix_parallel (None: the default)

    @property
    def total(self) -> int:
        return self.threads * self.posts

    def tags(self) -> list[str]:
        return [tag(t, i) for t in range(self.threads) for i in range(self.posts)]


def tag(thread: int, i: int) -> str:
    return f"KB-T{thread:02d}-P{i:02d}"


def author(thread: int, i: int) -> str:
    return AUTHORS[(thread + i) % len(AUTHORS)]


@dataclass
class Owed:
    """The store right after a kill: what the killed bot had left to do."""

    seen_in_room: int  # by the member's client when the kill was decided
    decided: int  # mails relayed (decisions committed)
    room_rows_pending: int  # room events decided, not recorded as sent
    marks: int  # posts whose list mail was not (fully) made
    mail_rows_pending: int  # list copies made, not recorded as sent
    # Of the room's, those Synapse had taken before the kill (counted at the end): sends in
    # flight, made again after the restart with the same transaction id.
    room_sends_in_flight: int = 0


async def list_inbox_count(world: World) -> int:
    imap = aioimaplib.IMAP4(host=world.mail_host, port=world.imap_port, timeout=10)
    try:
        await imap.wait_hello_from_server()
        await imap.login(world.list_address, "pw-list")
        await imap.select("INBOX")
        resp = await imap.search("ALL")
        return len([n for n in bytes(resp.lines[0]).split() if n.isdigit()])
    finally:
        await close_imap(imap)


async def queue_burst(world: World, burst: Burst) -> None:
    """Every mail of the burst in the list's inbox, each thread's in the order written: a
    round of the threads' next posts at a time, each round delivered before the next is
    written (Postfix may deliver two mails in either order)."""
    sent: dict[int, list[str]] = {t: [] for t in range(burst.threads)}

    async def write(t: int, i: int) -> None:
        earlier = sent[t]
        msgid = await world.mail[author(t, i)].send(
            world.list_address,
            world.list_fpr,
            f"Re: Burst thread {t}" if earlier else f"Burst thread {t}",
            f"{tag(t, i)} in the burst",
            in_reply_to=earlier[-1] if earlier else None,
            references=tuple(earlier),
        )
        earlier.append(msgid)

    for i in range(burst.posts):
        await asyncio.gather(*(write(t, i) for t in range(burst.threads)))
        want = (i + 1) * burst.threads
        deadline = time.monotonic() + 120
        while (have := await list_inbox_count(world)) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the list's inbox has {have} of {want} mails")
            await asyncio.sleep(0.1)


def store_db(world: World) -> sqlite3.Connection:
    assert world.config is not None
    return sqlite3.connect(world.config.store_path / "secir.sqlite")


def one(db: sqlite3.Connection, sql: str, *args: Any) -> int:
    return int(db.execute(sql, args).fetchone()[0])


def owed(world: World, seen: int) -> tuple[Owed, set[str]]:
    """What the store holds of the burst (read while the bot is down), and the posts whose
    room event it has not recorded as sent."""
    db = store_db(world)
    try:
        unsent = db.execute(
            "SELECT p.body FROM outbox o JOIN posts p ON p.uid = o.post_uid WHERE"
            " o.channel = 'matrix' AND o.kind = 'post' AND o.state = 'pending'"
        ).fetchall()
        return Owed(
            seen_in_room=seen,
            decided=one(db, "SELECT count(*) FROM inbox WHERE state = 'relayed'"),
            room_rows_pending=one(
                db,
                "SELECT count(*) FROM outbox WHERE channel = 'matrix' AND kind = 'post'"
                " AND state = 'pending' AND target = ?",
                world.incident_room,
            ),
            marks=one(db, "SELECT count(*) FROM kv WHERE key LIKE ?", MAIL_PENDING + "%"),
            mail_rows_pending=one(
                db, "SELECT count(*) FROM outbox WHERE channel = 'email' AND state = 'pending'"
            ),
        ), {found.group(1) for (body,) in unsent if (found := TAG.search(body))}
    finally:
        db.close()


def room_posts(world: World) -> list[tuple[str, SeenEvent]]:
    """The burst's posts in the room, in the order the member's client saw them."""
    assert world.config is not None
    bot = world.config.matrix.user_id
    carol = world.mx["carol"]
    return [
        (found.group(1), e)
        for e in list(carol.events)
        if e.sender == bot and e.room_id == world.incident_room
        if (found := TAG.search(e.body))
    ]


def relation(event: SeenEvent) -> dict[str, Any]:
    rel = event.content.get("m.relates_to") or {}
    return {
        "rel_type": rel.get("rel_type"),
        "root": rel.get("event_id"),
        "answers": (rel.get("m.in_reply_to") or {}).get("event_id"),
    }


def copies_of(world: World, member: str) -> dict[str, list[str]]:
    """The burst's list copies in a member's mailbox: tag -> the Message-ID of each copy."""
    out: dict[str, list[str]] = {}
    for mail in world.mail[member].seen:
        found = TAG.search(mail.text)
        if found:
            out.setdefault(found.group(1), []).append(str(mail.headers.get("Message-ID")))
    return out


def expected_copies(burst: Burst, member: str) -> set[str]:
    """The posts of the others (a member gets no copy of their own: echo_to_sender off)."""
    return {
        tag(t, i)
        for t in range(burst.threads)
        for i in range(burst.posts)
        if author(t, i) != member
    }


async def postfix_idle(mail_stack: MailStack) -> None:
    """Postfix's queue empty: a copy it took from the bot is in Dovecot by now."""
    etc = str(mail_stack.postfix_dir / "etc")

    def empty() -> bool:
        done = subprocess.run(
            ["postqueue", "-c", etc, "-j"], capture_output=True, check=False, text=True
        )
        return done.returncode == 0 and not done.stdout.strip()

    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(empty):
        if time.monotonic() > deadline:
            raise TimeoutError("Postfix's queue never emptied")
        await asyncio.sleep(0.1)


def pending(world: World) -> int:
    db = store_db(world)
    try:
        return one(db, "SELECT count(*) FROM outbox WHERE state = 'pending'") + one(
            db, "SELECT count(*) FROM kv WHERE key LIKE ?", MAIL_PENDING + "%"
        )
    finally:
        db.close()
