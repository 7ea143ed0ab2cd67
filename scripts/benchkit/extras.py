"""Figures outside the message path: stored posts, gpg's scaling, import time.

* ``store_posts`` puts posts into the bot's database through the bot's own store API
  (``Store.accept`` then ``Store.decide``, as the relay records a Matrix post), while the
  bot is stopped. Each post has its inbox row (the raw event) and its two links; no outbox
  rows (delivered rows would only add their payloads to the file, which the bot never
  loads). ``PRAGMA synchronous = OFF`` on this one connection saves 20,000 fsyncs.
* ``gpg_scaling`` runs the bot's sign+encrypt exactly as python-gnupg does, directly on a
  copy of the list's keyring, for growing recipient counts and keyring sizes, alternating
  the sizes so that load from elsewhere spreads evenly.
* ``import_time`` is ``python -X importtime -c "import secir_bot.cli"``.
* ``profile`` samples the running bot with py-spy during a few fan-out posts.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secir_bot.model import Channel, Post
from secir_bot.store import Store

from . import figures
from .figures import post_text
from .stats import pct, summary

if TYPE_CHECKING:
    from .run import Bench


def store_posts(store_dir: Path, author_email: str, room: str, count: int) -> dict[str, Any]:
    store = Store.open(store_dir)
    try:
        store.db.execute("PRAGMA synchronous = OFF")
        author = store.member_by_email(author_email)
        assert author is not None, f"{author_email} is not a member"
        start = time.perf_counter()
        root_uid: str | None = None
        for i in range(count):
            uid = f"stored{i:06d}"
            event_id = f"$stored{i:06d}:bench"
            body = post_text(f"STORED-{i}")
            raw = {
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": body},
                "event_id": event_id,
                "sender": author.matrix_id,
                "origin_server_ts": int(time.time() * 1000),
            }
            item, _ = store.accept("matrix", event_id, json.dumps(raw).encode(), {"room_id": room})
            root_uid = None if i % 10 == 0 else root_uid or f"stored{i - i % 10:06d}"
            post = Post(
                uid=uid,
                origin=Channel.MATRIX,
                author=author,
                subject=f"Stored post {i}",
                body=body,
                parent_uid=root_uid,
                root_uid=root_uid,
            )
            links = [("event", event_id), ("msgid", f"<{uid}@bench.test>")]
            store.decide(item.id, "relayed", post=post, links=links)
        seconds = time.perf_counter() - start
    finally:
        store.close()
    size = (store_dir / "secir.sqlite").stat().st_size
    return {"posts": count, "seconds": seconds, "db_mib": size / 2**20}


def _gpg(home: Path, *args: str, data: bytes = b"") -> float:
    start = time.perf_counter()
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
        input=data,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"gpg {args[:3]} failed: {result.stderr.decode(errors='replace')[-500:]}"
        )
    return time.perf_counter() - start


def gpg_scaling(b: Bench, repeats: int = 3) -> dict[str, Any]:
    """Time one sign+encrypt to k of the members, in keyrings of different sizes."""
    fprs = [m.fingerprint for m in b.members]
    total = len(fprs)
    counts = sorted({k for k in (1, 10, 100, 250, 500, 1000, total) if k <= total})
    data = post_text("GPG-SCALING").encode() * 2  # about the size of a composed inner mail
    homes: dict[int, Path] = {}
    try:
        secret = b.bot_gpg("--armor", "--export-secret-keys", b.list_fpr)
        # One keyring per size: the list key plus the first `size` member keys.
        sizes = sorted({min(100, total), total})
        for size in sizes:
            home = Path(tempfile.mkdtemp(prefix="gs", dir="/tmp"))
            home.chmod(0o700)
            homes[size] = home
            public = b.world.gpg("--export", *fprs[:size])
            _gpg(home, "--import", data=public)
            _gpg(home, "--import", data=secret)
        plan = [(k, max(sizes)) for k in counts]
        if len(sizes) > 1:
            plan.append((min(100, total), min(sizes)))
        timings: dict[str, list[float]] = {f"{k}/{size}": [] for k, size in plan}
        listing: dict[str, list[float]] = {f"{size}": [] for size in sizes}
        for _ in range(repeats):
            order = list(plan)
            random.shuffle(order)
            for k, size in order:
                recipients = [a for f in fprs[:k] for a in ("--recipient", f)]
                seconds = _gpg(
                    homes[size],
                    "--encrypt", *recipients, "--sign", "--default-key", b.list_fpr,
                    "--armor", "--always-trust", "--throw-keyids",
                    data=data,
                )  # fmt: skip
                timings[f"{k}/{size}"].append(seconds)
            for size in sizes:
                listing[f"{size}"].append(
                    _gpg(
                        homes[size],
                        "--with-colons",
                        "--fixed-list-mode",
                        "--list-keys",
                        *fprs[:size],
                    )
                )
        return {
            "sign_encrypt": {key: pct(v, 50) for key, v in timings.items()},
            "list_keys": {key: pct(v, 50) for key, v in listing.items()},
            "repeats": repeats,
        }
    finally:
        for home in homes.values():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
            shutil.rmtree(home, ignore_errors=True)


def import_time(repeats: int = 3) -> dict[str, Any]:
    """Wall time of ``import secir_bot.cli`` and the biggest imports under it."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import secir_bot.cli"], check=True)
        walls.append(time.perf_counter() - start)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import secir_bot.cli"],
        capture_output=True,
        check=True,
    )
    by_package: dict[str, float] = {}
    total = 0.0
    for line in result.stderr.decode().splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = (p.strip() for p in line[len("import time:") :].split("|"))
        if name == "secir_bot.cli":
            total = int(cumulative) / 1e6
        package = name.split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(own) / 1e6
    top = sorted(((s, name) for name, s in by_package.items()), reverse=True)
    return {
        "wall": summary(walls),
        "importtime_total": total,
        "top": [{"module": name, "seconds": s} for s, name in top[:8]],
    }


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile(b: Bench, n: int, posts: int) -> dict[str, Any]:
    """Sample the bot's Python stacks with py-spy while it fans out ``posts`` posts.

    Only samples where the bot's threads were running count (py-spy leaves out idle
    threads): they show where the bot itself spends CPU, apart from gpg and the servers.
    """
    program = _py_spy()
    if program is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[test]')"}
    raw = b.root / f"py-spy-{n}.txt"
    rate = 200
    errors = b.root / f"py-spy-{n}.log"
    with open(errors, "wb") as log:  # noqa: ASYNC230 - a moment's set-up
        spy = await asyncio.create_subprocess_exec(
            program, "record", "--pid", str(b.bot.pid), "--rate", str(rate), "--format", "raw",
            "--output", str(raw), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    # py-spy says nothing when it has attached (not on a pipe); give it a moment.
    await asyncio.sleep(1.0)
    if spy.returncode is not None:
        return {"skipped": f"py-spy failed: {errors.read_text(errors='replace')[-300:]}"}
    start = time.perf_counter()
    result = await figures.fanout(b, n, posts)
    seconds = time.perf_counter() - start
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
    await asyncio.wait_for(spy.communicate(), 60)
    if not raw.exists():
        return {"skipped": f"py-spy wrote nothing: {errors.read_text(errors='replace')[-300:]}"}
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    posts_seen = posts + 1  # the warm-up post was profiled too
    return {
        "posts": posts_seen,
        "seconds": seconds,
        "cpu_seconds_per_post": total / rate / posts_seen,
        "latency": result["latency"],
        "inclusive": _top(inclusive, total, 14),
        "own": [
            {"frame": f, "share": c / max(1, total)}
            for f, c in sorted(own.items(), key=lambda item: -item[1])[:10]
        ],
    }


# Frames of the event loop, threads and start-up: on most stacks, and saying nothing.
_PLUMBING = re.compile(
    r"\((asyncio/|threading\.py|concurrent/|selectors\.py|runpy\.py|secir-bot\)|"
    r"secir_bot/cli\.py|secir_bot/app\.py|<frozen)"
)


def _top(counts: dict[str, int], total: int, limit: int) -> list[dict[str, Any]]:
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    useful = [(frame, c) for frame, c in ranked if not _PLUMBING.search(frame)]
    return [{"frame": frame, "share": c / max(1, total)} for frame, c in useful[:limit]]
