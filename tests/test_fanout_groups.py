"""The fan-out's list mail in recipient groups (issue 11), with real gpg and no servers.

A post's list mail is one outbox row per recipient group (``delivery.encrypt_group_size``):
each member decrypts exactly their own group's mail and sees the list's signature, every
group's mail has the post's Message-ID, and the post costs one sign+encrypt per group (the
key listing comes from the cache).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio
from servers import GpgWorld

from secir_bot.app import decider
from secir_bot.crypto import Keyring
from secir_bot.inbox import Decider
from secir_bot.members import MemberRequest, add_member
from secir_bot.model import Channel, Member, Post
from secir_bot.sandbox.world import offline_config
from secir_bot.steps import Services
from secir_bot.store import Store

PEOPLE = tuple(f"{n}@test.example" for n in ("alice", "bob", "carol", "dave", "mallory"))


@dataclass
class Listed:
    decider: Decider
    ring: Keyring
    store: Store
    members: dict[str, Member]
    homes: dict[str, Path]


@pytest_asyncio.fixture
async def listed(gpg_world: GpgWorld) -> AsyncIterator[Listed]:
    root = Path(tempfile.mkdtemp(prefix="fg"))
    config = offline_config(root, "test.example")
    config = dataclasses.replace(
        config, delivery=dataclasses.replace(config.delivery, encrypt_group_size=2)
    )
    store = Store.open(config.store_path, create=True)
    ring = Keyring.create(config.store_path / "gnupg")
    list_fpr = await ring.generate("list", "list@test.example")
    public = (await ring.export_public(list_fpr)).encode()
    members, homes = {}, {}
    for i, address in enumerate(PEOPLE):
        members[address] = await add_member(
            store,
            ring,
            MemberRequest(
                tld="nl",
                name=address.split("@")[0],
                email=address,
                rank=1 + i % 3,
                key=gpg_world.export_public(address),
                channels="email",
            ),
        )
        homes[address] = gpg_world.make_home([address])
        gpg_world.gpg(homes[address], "--import", input=public)
    services = Services(config, store, ring, list_fpr, "@bot:test.example")
    d = decider(services)
    try:
        yield Listed(d, ring, store, members, homes)
    finally:
        await d.fanout.mail.aclose()
        await asyncio.to_thread(ring.close)
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def _decrypt(home: Path, payload: bytes) -> subprocess.CompletedProcess[bytes]:
    msg = email.message_from_bytes(payload)
    armored = msg.get_payload()[1].get_payload(decode=True)  # type: ignore[index, union-attr]
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--status-fd", "2", "--decrypt"],
        input=armored,
        capture_output=True,
        check=False,
    )


async def test_i11_list_mail_is_one_row_per_recipient_group(listed: Listed) -> None:
    author = listed.members["alice@test.example"]
    first = Post(uid="p0", origin=Channel.MATRIX, author=author, subject="s", body="warm-up")
    await listed.decider.fanout.deliveries(first)  # fills the key listing cache
    post = Post(uid="p1", origin=Channel.MATRIX, author=author, subject="s", body="Resolver down")
    calls = listed.ring.calls

    rows = await listed.decider.fanout.deliveries(post)

    assert listed.ring.calls - calls == 2  # one sign+encrypt per group, no listing
    assert [len(r.recipients) for r in rows] == [2, 2]  # 4 members without the author
    assert sorted(a for r in rows for a in r.recipients) == sorted(PEOPLE[1:])
    assert {r.target for r in rows} == {"list"} and {r.post_uid for r in rows} == {"p1"}
    ids = {email.message_from_bytes(r.payload)["Message-ID"] for r in rows}
    assert len(ids) == 1
    for row in rows:
        for address in PEOPLE[1:]:
            run = _decrypt(listed.homes[address], row.payload)
            if address in row.recipients:
                assert b"Resolver down" in run.stdout
                assert b"[GNUPG:] GOODSIG" in run.stderr
            else:
                assert b"[GNUPG:] DECRYPTION_OKAY" not in run.stderr
                assert b"Resolver down" not in run.stdout
