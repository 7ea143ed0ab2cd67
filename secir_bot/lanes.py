"""Deciding several inbox items at once while keeping the order that matters.

A burst of member mail is decided several at a time (``imap.parallel_decisions``): each
decision spends most of its time in gpg processes (decrypt and verify, then sign and
encrypt the list mail), which the machine's cores can run side by side. What must keep its
order is what readers see in order: the posts of one thread, and the posts of one sender.
So every item has *lane keys*; an item starts only after every earlier item that shares a
key with it has been decided, and items with no key in common run in parallel, at most
``parallel`` at once. With ``parallel = 1`` the items are decided strictly one after the
other, as before.

The keys of a mail come from its outer header, before anything is decrypted: the sender
address (``From``) and the thread, named by the first Message-ID of ``References`` (the
thread's first message), else ``In-Reply-To``, else the mail's own Message-ID. They only
order work: nothing here is trusted, shown or relayed, and a header that cannot be read
gives one shared key, so such mails keep their order among themselves.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr
from typing import TypeVar

from secir_bot.model import Channel

T = TypeVar("T")

HEADER_BYTES = 65536  # enough for any real header; the rest of the mail is not looked at
_MSGID = re.compile(r"<[^<>\s]{1,250}>")


def mail_keys(raw: bytes) -> frozenset[str]:
    """The lane keys of a mail: its sender and its thread (from the outer header)."""
    try:
        head = BytesHeaderParser(policy=compat32).parsebytes(raw[:HEADER_BYTES])
        sender = parseaddr(str(head.get("From", "")))[1].lower()
        thread = ""
        for name in ("References", "In-Reply-To", "Message-ID"):
            found = _MSGID.findall(str(head.get(name, "")))
            if found:
                thread = found[0]
                break
    except Exception:  # a header the parser cannot take: ordered with the other such mail
        return frozenset({"unreadable"})
    return frozenset({f"from:{sender}", f"thread:{thread or 'none'}"})


def lane_keys(source: str, raw: bytes) -> frozenset[str]:
    """What a received item must stay in order with (its decision, then its post's list
    mail): a mail's sender and thread; the room's events all in one lane."""
    return mail_keys(raw) if source == Channel.EMAIL else frozenset({"matrix"})


async def run_in_lanes(
    items: Sequence[T],
    keys: Callable[[T], Iterable[str]],
    work: Callable[[T], Awaitable[None]],
    parallel: int,
) -> None:
    """Run ``work`` on every item, at most ``parallel`` at once, each item after every
    earlier item that shares one of its keys. An exception from ``work`` cancels the rest
    and is raised (``work`` is expected to settle its own failures)."""
    if parallel <= 1:
        for item in items:
            await work(item)
        return
    slots = asyncio.Semaphore(parallel)
    last: dict[str, asyncio.Task[None]] = {}

    async def after(item: T, before: set[asyncio.Task[None]]) -> None:
        if before:
            await asyncio.wait(before)  # never raises; a failure there ends the group anyway
        async with slots:
            await work(item)

    async with asyncio.TaskGroup() as tg:
        for item in items:
            item_keys = set(keys(item))
            before = {last[k] for k in item_keys if k in last}
            task = tg.create_task(after(item, before))
            for k in item_keys:
                last[k] = task
