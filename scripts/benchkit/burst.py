"""Figure 4, the burst: member mails waiting in the list's mailbox before the bot starts.

The mails are real member mails (PGP/MIME, signed by the member's key, encrypted to the
list key), in threads of ten: each reply names the previous mail of its thread in
In-Reply-To and References, as mail clients do. They are put into the list's INBOX with
IMAP APPEND, threads interleaved, so that the mailbox order is the order of each thread.
Then the bot starts, and the reader's Matrix client counts what arrives: how fast, what is
lost or doubled, whether each thread keeps its order and lands in the right Matrix thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from typing import TYPE_CHECKING, Any

import aioimaplib

from secir_bot.bridges.email import close_imap

from .cpu import agents_of, sharers, snapshot, used
from .figures import FILLER, mail_operator
from .profile import Spy
from .stack import Arrival

if TYPE_CHECKING:
    from .run import Bench

THREAD_LENGTH = 10


def _marker(tag: str, thread: int, seq: int) -> str:
    return f"BURST-{tag}-t{thread:03d}-s{seq:02d}"


async def queue_mails(b: Bench, n: int, count: int) -> tuple[list[str], float]:
    """Compose ``count`` member mails and APPEND them; (markers in mailbox order, seconds)."""
    threads = max(1, count // THREAD_LENGTH)
    plan = [(i % threads, i // threads) for i in range(count)]  # (thread, seq), interleaved
    operators = [mail_operator(b, m, 0) for m in b.members[:n]]
    mails: dict[tuple[int, int], bytes] = {}
    limit = asyncio.Semaphore(4)

    async def compose_thread(thread: int, length: int) -> None:
        # A reply names every earlier mail of its thread, so a thread is built in order.
        refs: list[str] = []
        for seq in range(length):
            op = operators[(thread * THREAD_LENGTH + seq) % len(operators)]
            subject = f"Burst thread {thread}" if seq == 0 else f"Re: Burst thread {thread}"
            async with limit:
                msgid, data = await op.compose(
                    b.stack.list_address,
                    b.list_fpr,
                    subject,
                    f"{_marker(b.tag, thread, seq)}\n\n{FILLER}",
                    in_reply_to=refs[-1] if refs else None,
                    references=tuple(refs),
                )
            refs.append(msgid)
            mails[(thread, seq)] = data

    start = time.perf_counter()
    lengths = {t: sum(1 for pt, _ in plan if pt == t) for t in range(threads)}
    await asyncio.gather(*(compose_thread(t, length) for t, length in lengths.items()))
    imap = aioimaplib.IMAP4(host="127.0.0.1", port=b.stack.mail.imap_port, timeout=60)
    try:
        await imap.wait_hello_from_server()
        await imap.login(b.stack.list_address, "pw-list")
        for key in plan:
            resp = await imap.append(mails[key], mailbox="INBOX")
            if resp.result != "OK":
                raise RuntimeError(f"IMAP APPEND refused: {resp.lines[-1:]!r}")
    finally:
        await close_imap(imap)
    return [_marker(b.tag, t, s) for t, s in plan], time.perf_counter() - start


def _found(tag: str, body: str) -> str | None:
    match = re.search(rf"BURST-{tag}-t\d{{3}}-s\d{{2}}", body)
    return match.group(0) if match else None


def judge(tag: str, markers: list[str], arrivals: list[Arrival]) -> dict[str, Any]:
    """Lost, doubled, out of order within a thread, outside the thread's Matrix thread."""
    wanted = set(markers)
    seen: dict[str, list[Arrival]] = {}
    for a in arrivals:
        marker = _found(tag, a.body)
        if marker in wanted:
            seen.setdefault(marker, []).append(a)
    lost = sorted(wanted - set(seen))
    duplicates = sum(len(v) - 1 for v in seen.values())
    out_of_order = 0
    wrong_thread = 0
    by_thread: dict[str, list[tuple[int, Arrival]]] = {}
    for marker, got in seen.items():
        thread, seq = marker.rsplit("-", 2)[1:]
        by_thread.setdefault(thread, []).append((int(seq[1:]), got[0]))
    for thread_items in by_thread.values():
        thread_items.sort(key=lambda item: item[1].at)
        seqs = [seq for seq, _ in thread_items]
        out_of_order += sum(1 for x, y in itertools.pairwise(seqs) if y < x)
        root = next((a for seq, a in thread_items if seq == 0), None)
        for seq, a in thread_items:
            if seq == 0 or root is None:
                continue
            relation = a.content.get("m.relates_to") or {}
            if relation.get("rel_type") != "m.thread" or relation.get("event_id") != root.event_id:
                wrong_thread += 1
    return {
        "lost": len(lost),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "wrong_thread": wrong_thread,
        "first_lost": lost[:5],
    }


def _buckets(moments: list[float], since: float, width: float = 5.0) -> list[int]:
    """How many of ``moments`` fall in each ``width`` seconds from ``since``."""
    counts: list[int] = []
    for at in moments:
        slot = max(0, int((at - since) // width))
        counts += [0] * (slot + 1 - len(counts))
        counts[slot] += 1
    return counts


async def burst(b: Bench, n: int, count: int, profiled: bool = False) -> dict[str, Any]:
    """The bot must be stopped; it is started here and left running."""
    assert b.stack.reader is not None and b.bot.process is None
    markers, queue_seconds = await queue_mails(b, n, count)
    reader = b.stack.reader
    b.sink.forget()
    start = await b.bot.start()
    spawned = b.bot.spawned_at
    cpu = cpu_start = b.bot.cpu()
    gpg_start = b.bot.children_cpu()
    others = sharers(b.stack.synapse.pid, b.bot.pid, b.bot.store / "gnupg")
    others_start = snapshot(others)
    # Sampled from the first sync on (py-spy attaches to a running process).
    spy = await Spy(b.bot.pid, b.root / "py-spy-burst.txt").start() if profiled else None
    deadline = time.monotonic() + 120 + count * 1.5
    wanted = set(markers)
    got: set[str] = set()
    looked = 0
    while got != wanted and time.monotonic() < deadline:
        reader.changed.clear()
        for a in reader.arrivals[looked:]:
            if a.at >= spawned and (marker := _found(b.tag, a.body)) is not None:
                got.add(marker)
        looked = len(reader.arrivals)
        if got != wanted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.changed.wait(), 5)
    cpu = b.bot.cpu() - cpu
    # The agent starts with the first decryption, after the snapshot at the start: its CPU
    # up to then was nothing.
    others["gpg_agent"] = agents_of(b.bot.store / "gnupg")
    others_end = snapshot(others)
    profile = await spy.stop() if spy is not None else None
    arrivals = [a for a in reader.arrivals if a.at >= spawned]
    verdict = judge(b.tag, markers, arrivals)
    times = sorted(a.at for a in arrivals if _found(b.tag, a.body) in wanted)
    gpg: dict[str, dict[str, float]] = {}
    for call in b.bot.gpg_calls(spawned, times[-1] if times else time.time()):
        entry = gpg.setdefault(call.kind, {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] += call.seconds
    # The list's copies: one message per post, to every member but its author.
    sink_deadline = time.monotonic() + 120
    while time.monotonic() < sink_deadline:
        complete = [
            ts for ts in b.sink.messages_since(spawned).values()
            if len({r for t in ts for r in t.recipients}) >= n - 1
        ]  # fmt: skip
        if len(complete) >= count - verdict["lost"]:
            break
        await asyncio.sleep(0.2)
    mailed = len(complete)
    # The mail leg's cost: when the last list copy was complete at the sink, and the bot's
    # CPU (its own, and its gpg children's) up to then.
    copies = [max(t.data_at for t in ts) for ts in complete]
    last_copy = (max(copies) - spawned) if copies else float("nan")
    cpu_all, gpg_cpu_all = b.bot.cpu() - cpu_start, b.bot.children_cpu() - gpg_start
    decided = b.bot.decided_at(spawned)  # the room rows queued, before Matrix delivers them
    rss = b.bot.rss()
    b.sink.forget()
    elapsed = (times[-1] - spawned) if times else float("nan")
    after_sync = (times[-1] - spawned - start.synced) if times and start.synced else float("nan")
    return {
        "n": n,
        "mails": count,
        "queue_seconds": queue_seconds,
        "in_room": count - verdict["lost"],
        "seconds_from_start": elapsed,
        "first_in_room": (times[0] - spawned) if times else float("nan"),
        "rate_from_start": count / elapsed if times else 0.0,
        "rate_after_sync": count / after_sync if times and after_sync > 0 else 0.0,
        "mailed": mailed,
        "last_list_copy": last_copy,
        "last_decided": (decided[-1] - spawned) if decided else float("nan"),
        # How each leg went over time (counts per 5 s from the start; JSON only).
        "by_5s": {
            "decided": _buckets(decided, spawned),
            "in_room": _buckets(times, spawned),
            "list_copies": _buckets(copies, spawned),
        },
        "cpu_to_last_copy": cpu_all,
        "gpg_cpu_to_last_copy": gpg_cpu_all,
        "rss_peak_mib": rss[1],
        "gpg": gpg,
        "cpu_after_sync": cpu,
        # From the start to the last in the room (the gpg-agent decrypts and signs for gpg).
        "cpu_others": used(others_start, others_end),
        "profile": profile,
        **verdict,
    }
