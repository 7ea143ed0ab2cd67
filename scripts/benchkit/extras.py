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
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secir_bot.model import Channel, Post
from secir_bot.sandbox.scratch import short_tempdir
from secir_bot.store import Store

from .figures import post_text
from .stats import pct, summary

if TYPE_CHECKING:
    from .run import Bench


def store_posts(store_dir: Path, author_email: str, room: str, count: int) -> dict[str, Any]:
    store = Store.open(store_dir)
    try:
        store.db.execute("PRAGMA synchronous = OFF")
        author = store.members.by_email(author_email)
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
            item, _ = store.inbox.accept(
                "matrix", event_id, json.dumps(raw).encode(), {"room_id": room}
            )
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
    """Time one sign+encrypt to k of the members, in keyrings of different sizes.

    Recipients are the first k keys imported ("front"), or, for one size, the last k
    ("back"): gpg 2.2 finds each recipient by reading its keybox file from the start, so
    where the keys sit tells whether that search is what grows.
    """
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
            home = short_tempdir("gs")
            home.chmod(0o700)
            homes[size] = home
            _gpg(home, "--import", data=secret)
            _gpg(home, "--import", data=b.world.gpg("--export", *fprs[:size]))
        big, small = max(sizes), min(sizes)
        plan = [(k, big, "front") for k in counts]
        if big > small:
            plan += [(small, small, "front"), (small, big, "back")]
        timings: dict[str, list[float]] = {f"{k}/{size}/{at}": [] for k, size, at in plan}
        listing: dict[str, list[float]] = {f"{size}": [] for size in sizes}
        for _ in range(repeats):
            order = list(plan)
            random.shuffle(order)
            for k, size, at in order:
                chosen = fprs[:k] if at == "front" else fprs[size - k : size]
                recipients = [a for f in chosen for a in ("--recipient", f)]
                seconds = _gpg(
                    homes[size],
                    "--encrypt", *recipients, "--sign", "--default-key", b.list_fpr,
                    "--armor", "--always-trust", "--throw-keyids",
                    data=data,
                )  # fmt: skip
                timings[f"{k}/{size}/{at}"].append(seconds)
            for size in sizes:
                listing[f"{size}"].append(
                    _gpg(homes[size], "--with-colons", "--fixed-list-mode", "--list-keys",
                         *fprs[:size])
                )  # fmt: skip
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
