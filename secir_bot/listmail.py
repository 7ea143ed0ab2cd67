"""The list mail of relayed posts, made after their decisions: the room never waits on it.

A decision ends when the post's room rows are committed (``inbox.Decider``); its list mail
(signed and encrypted to the members, one commit per recipient group) is handed to this
stage, so that the next mails of a burst are decrypted, checked and in the room while gpg
still encrypts the list copies of the earlier ones.

Order: the list mails of posts that share a lane key (``lanes``: one thread, one sender;
every room post shares one key) are made one after the other, in the order the posts were
handed over, which is the order they were decided. Posts with no key in common are made side
by side, at most ``at_once`` at a time (the crypto backend bounds the encryptions below).

Durability does not live here: the decision's commit holds the post's ``MAIL_PENDING`` mark
and the maker clears it when the list mail is queued, so a stop (which cancels what is
waiting or running here) leaves the marks, and ``Decider.resume`` makes those list mails at
the next start.

The mark's value (``pending_value``) keeps what the post's stored row does not: its notes,
formatted text, the post it corrects and its files (bytes and all), so that the list mail
made after a stop is the one that would have been made without it (``pending_post``). The
files are copied rather than referenced: where they came from (a Matrix file's media row,
the member's raw mail) is purged on its own schedule, and the copy goes with the mark.

Memory: a post waiting here is held with its text and files. The backlog is bounded
(``BACKLOG`` posts, ``BACKLOG_BYTES`` of text and files); when it is full, handing over
waits, and with it the decision and its lane, until list mail has been made.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable

from secir_bot.model import File, Post

log = logging.getLogger(__name__)

BACKLOG = 1000  # posts whose list mail may wait here at once (a burst of member mail)
BACKLOG_BYTES = 64 * 2**20  # their text and files together (one larger post always fits)
AT_ONCE = 4  # list mails made side by side (posts of different lanes)

Make = Callable[[Post, str], Awaitable[None]]  # renders, queues and clears the mark


def pending_value(post: Post) -> str:
    """A ``MAIL_PENDING`` mark's value: what ``pending_post`` needs besides the stored post."""
    kept: dict[str, object] = {"notes": list(post.notes)}
    if post.formatted is not None:
        kept["formatted"] = post.formatted
    if post.corrects is not None:
        kept["corrects"] = post.corrects
    if post.files:
        kept["files"] = [
            {
                "filename": f.filename,
                "content_type": f.content_type,
                "data": base64.b64encode(f.data).decode("ascii"),
            }
            for f in post.files
        ]
    return json.dumps(kept)


def pending_post(stored: Post, value: str) -> Post:
    """The post as decided: its stored row with what its mark's ``value`` kept. A mark
    written before files and formatting were kept is a bare list of notes."""
    kept = json.loads(value)
    if isinstance(kept, list):
        return dataclasses.replace(stored, notes=tuple(kept))
    files = tuple(
        File(f["filename"], f["content_type"], base64.b64decode(f["data"]))
        for f in kept.get("files", ())
    )
    return dataclasses.replace(
        stored,
        notes=tuple(kept.get("notes", ())),
        formatted=kept.get("formatted"),
        corrects=kept.get("corrects"),
        files=files,
    )


def weight(post: Post) -> int:
    """What a waiting post holds in memory, roughly: its text and its files."""
    return len(post.body) + len(post.formatted or "") + sum(len(f.data) for f in post.files)


class ListMail:
    """The follow-on stage of the decisions: each post's list mail, in order per lane."""

    def __init__(
        self,
        make: Make,
        *,
        backlog: int = BACKLOG,
        backlog_bytes: int = BACKLOG_BYTES,
        at_once: int = AT_ONCE,
    ) -> None:
        self._make = make
        self.backlog = backlog
        self.backlog_bytes = backlog_bytes
        self._slots = asyncio.Semaphore(at_once)
        self._last: dict[str, asyncio.Task[None]] = {}  # the latest job of each lane key
        self._jobs: set[asyncio.Task[None]] = set()
        self._bytes = 0
        self._freed = asyncio.Event()  # set when a job ends (a waiting hand-over rechecks)

    def __len__(self) -> int:
        """Posts whose list mail is waiting or being made."""
        return len(self._jobs)

    async def add(self, post: Post, mark: str, keys: Iterable[str]) -> None:
        """Hand over a decided post's list mail (``mark`` is its ``MAIL_PENDING`` mark);
        returns once it is taken, which waits while the backlog is full."""
        size, keys = weight(post), frozenset(keys)
        while not self._fits(size):
            self._freed.clear()
            await self._freed.wait()
        before = {self._last[k] for k in keys if k in self._last}
        job = asyncio.create_task(self._run(post, mark, before), name=f"list-mail-{post.uid}")
        self._jobs.add(job)
        self._bytes += size
        for k in keys:
            self._last[k] = job
        job.add_done_callback(lambda done: self._done(done, size))

    def _fits(self, size: int) -> bool:
        if not self._jobs:
            return True
        return len(self._jobs) < self.backlog and self._bytes + size <= self.backlog_bytes

    async def _run(self, post: Post, mark: str, before: set[asyncio.Task[None]]) -> None:
        if before:
            await asyncio.wait(before)  # never raises; each job settles its own failures
        async with self._slots:
            try:
                await self._make(post, mark)
            except Exception as exc:  # the maker reports its own failures; never lose the lane
                log.error("post %s: list mail stage failed (%s)", post.uid, type(exc).__name__)

    def _done(self, job: asyncio.Task[None], size: int) -> None:
        self._jobs.discard(job)
        self._bytes -= size
        for k in [k for k, last in self._last.items() if last is job]:
            del self._last[k]
        self._freed.set()

    async def idle(self) -> None:
        """Wait until every list mail handed over so far is made (or has failed)."""
        while self._jobs:
            await asyncio.wait(set(self._jobs))

    async def aclose(self) -> None:
        """Stop: what waits or runs here is cancelled (its marks stay for ``resume``)."""
        jobs = set(self._jobs)
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs)
