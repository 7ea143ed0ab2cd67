"""Benchmark the email fan-out: gpg calls and time per post as the list grows.

Builds a real store and keyring (no servers needed), adds N members with real keys, and
composes the list mail for one post the way the bot does (``Processor._to_list``). Prints,
for each N, the number of gpg invocations and the wall time. The target (issue #2): the
gpg calls per post do not grow with N; 200 members cost well under a second.

Run with ``make bench``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from secir_bot import config as config_mod
from secir_bot.crypto import Keyring
from secir_bot.members import MemberRequest, add_member
from secir_bot.model import Channel, Post
from secir_bot.pipeline import Services
from secir_bot.relay import Processor
from secir_bot.sandbox.world import offline_config
from secir_bot.store import Store

SIZES = (1, 10, 50, 200)
TLDS = ("nl", "br", "jp", "de", "fr", "za", "ke", "cl", "nz", "in")


def _config(directory: Path) -> config_mod.Config:
    return offline_config(directory, "bench.test")


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bf"))
    try:
        cfg = _config(root)
        store = Store.open(cfg.store_path, create=True)
        ring = Keyring.create(cfg.store_path / "gnupg")
        member_home = Path(tempfile.mkdtemp(prefix="bm"))
        members_ring = Keyring.create(member_home)
        list_fpr = await ring.generate("bench list", "list@bench.test")
        processor = Processor(Services(cfg, store, ring, list_fpr, "@bot:bench.test"))
        print(f"{'members':>8} {'gpg calls/post':>15} {'compose ms':>11}")
        count = 0
        author = None
        for size in SIZES:
            while count < size:
                email = f"m{count:03d}@bench.test"
                fpr = await members_ring.generate(f"Member {count}", email)
                m = await add_member(
                    store,
                    ring,
                    MemberRequest(
                        tld=TLDS[count % len(TLDS)],
                        name=f"Member {count}",
                        email=email,
                        key=await members_ring.export_public(fpr),
                        channels="email",
                        rank=1 + count // len(TLDS) % 3,
                    ),
                )
                author = author or m
                count += 1
            assert author is not None
            post = Post(
                uid=f"bench{size}",
                origin=Channel.MATRIX,
                author=author,
                subject="bench",
                body=("x" * 60 + "\n") * 60,
            )
            before, start = ring.calls, time.perf_counter()
            deliveries = await processor._to_list(post)
            elapsed = (time.perf_counter() - start) * 1000
            recipients = sum(len(d.recipients) for d in deliveries)
            print(
                f"{size:>8} {ring.calls - before:>15} {elapsed:>11.1f}   "
                f"({recipients} recipients, {len(deliveries)} SMTP row)"
            )
        members_ring.close()
        ring.close()
        store.close()
        shutil.rmtree(member_home, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
