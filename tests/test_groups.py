"""Encryption to recipient groups (issue 11), with real gpg and the session's test keys.

Every member decrypts exactly their own group's message and sees the list's signature, the
number of gpg calls is the number of groups, and groups run in parallel up to the bound.
The last test pins down what members' gpg does with hidden recipients (the "exit code 2
although it decrypted" finding of docs/performance.md) and that a group bounds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from servers import GpgWorld

from secir_bot.crypto import Keyring
from secir_bot.crypto.backend import GpgBackend
from secir_bot.crypto.groups import plan_groups, sign_encrypt_each, sign_encrypt_groups
from secir_bot.errors import CryptoError

PEOPLE = tuple(f"{n}@test.example" for n in ("alice", "bob", "carol", "dave", "mallory"))
TEXT = b"Incident 42: the resolver at 192.0.2.1 is down.\r\n"


class CountingKeyring(Keyring):
    """The real keyring, counting how many sign+encrypt calls run at the same time."""

    active = 0
    most = 0

    async def sign_encrypt(
        self, data: bytes, recipients: list[str], signer: str, *, hide: bool = True
    ) -> bytes:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            return await super().sign_encrypt(data, recipients, signer, hide=hide)
        finally:
            self.active -= 1


@dataclass(frozen=True)
class ListRing:
    ring: CountingKeyring
    fingerprint: str
    public: str


@pytest_asyncio.fixture
async def listring(gpg_world: GpgWorld) -> AsyncIterator[ListRing]:
    home = Path(tempfile.mkdtemp(prefix="g"))
    ring = CountingKeyring.create(home)
    fpr = await ring.generate("SECIR list", "secir@lists.secir.test")
    for email in PEOPLE:
        await ring.import_key(gpg_world.export_public(email))
    yield ListRing(ring, fpr, await ring.export_public(fpr))
    await asyncio.to_thread(ring.close)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def member_homes(gpg_world: GpgWorld, listring: ListRing) -> dict[str, Path]:
    """Each member's own GnuPG home: their secret key and the list's public key."""
    homes = {}
    for email in PEOPLE:
        home = gpg_world.make_home([email])
        gpg_world.gpg(home, "--import", input=listring.public.encode())
        homes[email] = home
    return homes


# -- planning ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size", "sizes"),
    [
        (1, 250, [1]),
        (250, 250, [250]),
        (251, 250, [126, 125]),
        (1000, 250, [250, 250, 250, 250]),
        (1001, 250, [201, 200, 200, 200, 200]),
        (7, 3, [3, 2, 2]),
    ],
)
def test_groups_are_even_and_never_larger_than_the_size(
    n: int, size: int, sizes: list[int]
) -> None:
    people = [f"{i:040X}" for i in range(n)]
    groups = plan_groups(people, size)
    assert [len(g) for g in groups] == sizes
    assert [p for g in groups for p in g] == people  # each once, in order


def test_planning_drops_duplicates_and_refuses_a_size_below_one() -> None:
    assert plan_groups(["A", "B", "A", "C"], 2) == [("A", "B"), ("C",)]
    assert plan_groups([], 5) == []
    with pytest.raises(ValueError, match="at least 1"):
        plan_groups(["A"], 0)


# -- with gpg ----------------------------------------------------------------------------


async def test_every_member_decrypts_exactly_their_groups_message(
    listring: ListRing, member_homes: dict[str, Path], gpg_world: GpgWorld
) -> None:
    fprs = {gpg_world.fingerprint(e): e for e in PEOPLE}
    backend = GpgBackend(listring.ring, parallel=2)
    calls = listring.ring.calls

    sealed = await sign_encrypt_groups(
        backend, TEXT, list(fprs), listring.fingerprint, group_size=2
    )

    assert [len(s.recipients) for s in sealed] == [2, 2, 1]
    assert listring.ring.calls - calls == len(sealed)  # one gpg call per group
    assert {f for s in sealed for f in s.recipients} == set(fprs)
    for group in sealed:
        for fpr, email in fprs.items():
            result = await Keyring(member_homes[email]).decrypt(group.armored)
            if fpr in group.recipients:
                assert result.ok and result.data == TEXT, email
                assert result.valid and result.signer == listring.fingerprint
            else:
                assert not result.ok, f"{email} read another group's message"


async def test_groups_run_in_parallel_up_to_the_bound(
    listring: ListRing, gpg_world: GpgWorld
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]

    await sign_encrypt_groups(
        GpgBackend(listring.ring, parallel=2), TEXT, fprs, listring.fingerprint, group_size=1
    )
    assert listring.ring.most == 2  # five groups, never more than two gpg at once

    listring.ring.most = 0
    await sign_encrypt_groups(
        GpgBackend(listring.ring, parallel=1), TEXT, fprs, listring.fingerprint, group_size=1
    )
    assert listring.ring.most == 1


async def test_a_failing_group_fails_the_whole_post(
    listring: ListRing, gpg_world: GpgWorld
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE[:3]] + ["F" * 40]  # not in the keyring

    with pytest.raises(CryptoError, match="could not encrypt"):
        await sign_encrypt_groups(
            GpgBackend(listring.ring), TEXT, fprs, listring.fingerprint, group_size=2
        )
    with pytest.raises(CryptoError, match="no recipients"):
        await sign_encrypt_groups(
            GpgBackend(listring.ring), TEXT, [], listring.fingerprint, group_size=2
        )


def _member_gpg(home: Path, armored: bytes) -> tuple[int, list[str]]:
    """A member's own gpg decrypting list mail: exit code and status lines."""
    run = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--status-fd", "2", "--decrypt"],
        input=armored,
        capture_output=True,
        check=False,
    )
    status = [
        line[len("[GNUPG:] ") :]
        for line in run.stderr.decode(errors="replace").splitlines()
        if line.startswith("[GNUPG:] ")
    ]
    return run.returncode, status


def _count(status: Sequence[str], keyword: str) -> int:
    return sum(1 for line in status if line.split(" ", 1)[0] == keyword)


async def test_hidden_recipients_make_members_gpg_try_each_key_of_their_group(
    listring: ListRing, member_homes: dict[str, Path], gpg_world: GpgWorld
) -> None:
    """gpg exits 2 for a member whose session key is not the first one, although it
    decrypted and verified: each failed trial of its key on another member's session key
    is logged as an error. The trials are bounded by the group; without hidden key ids
    there are none, and the exit code is 0."""
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    last = PEOPLE[-1]  # encrypted to last: tries every session key before its own
    hidden = await GpgBackend(listring.ring).sign_encrypt(TEXT, fprs, listring.fingerprint)
    shown = await GpgBackend(listring.ring, hide_recipients=False).sign_encrypt(
        TEXT, fprs, listring.fingerprint
    )

    code, status = await asyncio.to_thread(_member_gpg, member_homes[last], hidden)
    assert _count(status, "DECRYPTION_OKAY") == 1 and _count(status, "GOODSIG") == 1
    assert code == 2
    assert _count(status, "ENC_TO") == len(PEOPLE)  # one trial per member of the group
    assert all(line.startswith("ENC_TO 0000000000000000") for line in status if "ENC_TO" in line)

    code, status = await asyncio.to_thread(_member_gpg, member_homes[last], shown)
    assert _count(status, "DECRYPTION_OKAY") == 1 and _count(status, "GOODSIG") == 1
    assert code == 0


async def test_f_fanout_each_group_comes_as_made_and_a_failure_stops_the_rest(
    listring: ListRing, gpg_world: GpgWorld
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    backend = GpgBackend(listring.ring, parallel=1)

    made = [
        s.recipients
        async for s in sign_encrypt_each(backend, TEXT, fprs, listring.fingerprint, group_size=2)
    ]
    assert sorted(made) == sorted(plan_groups(fprs, 2))

    bad = [fprs[0], "F" * 40, *fprs[1:]]  # the first group cannot be encrypted
    seen: list[tuple[str, ...]] = []

    async def consume() -> None:
        async for s in sign_encrypt_each(backend, TEXT, bad, listring.fingerprint, group_size=2):
            seen.append(s.recipients)

    with pytest.raises(CryptoError, match="could not encrypt"):
        await consume()
    assert listring.ring.active == 0  # the groups still waiting were cancelled, not left
    assert all("F" * 40 not in group for group in seen)

    async with contextlib.aclosing(
        sign_encrypt_each(backend, TEXT, fprs, listring.fingerprint, group_size=1)
    ) as each:
        async for _ in each:
            break  # the consumer stops (the bot is stopping) after the first group
    assert listring.ring.active == 0
