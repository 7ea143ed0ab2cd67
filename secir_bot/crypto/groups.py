"""One post to many members: sign and encrypt once per recipient group.

One OpenPGP message to all N members costs gpg ~0.8 ms of CPU per recipient on one core,
and every member receives every other member's encrypted session key: 134 KB per mail at
1000 members, and with hidden key ids the last member's gpg tries its key on all of them
(docs/performance.md). Split into groups of at most ``group_size``, each group gets a
message of its own: mails stay small, a member tries at most ``group_size`` session keys,
the groups are encrypted on every core at once, and the number of encryptions per post is
``ceil(N / group_size)``, never one per member.

The fan-out makes its backend once with :func:`make_backend` (here rather than in
``backend``, which the Sequoia module imports), calls :func:`sign_encrypt_each` with the
fingerprints of the members who get the post, and commits one outbox row per
:class:`Sealed` as it comes (its recipients' addresses and the mail built around
``armored``), so that the first groups are sent while gpg works on the others.
:func:`sign_encrypt_groups` is the all-or-nothing form (answers to one member, the
benchmarks).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from secir_bot.crypto.backend import GpgBackend, SignEncrypt
from secir_bot.crypto.keyring import Keyring
from secir_bot.errors import CryptoError


@dataclass(frozen=True)
class Sealed:
    """One group's message: who can read it, and the ASCII-armoured OpenPGP bytes."""

    recipients: tuple[str, ...]
    armored: bytes


def plan_groups(recipients: Sequence[str], group_size: int) -> list[tuple[str, ...]]:
    """Split ``recipients`` (duplicates dropped, order kept) into ``ceil(N / group_size)``
    groups whose sizes differ by at most one.

    Even groups rather than full ones and a remainder: 1001 members in groups of at most
    250 are five groups of about 200, not four of 250 and one of a single member, so that
    parallel encryptions finish together and every member's mail is about as small.
    """
    if group_size < 1:
        raise ValueError("group_size must be at least 1")
    unique = list(dict.fromkeys(recipients))
    if not unique:
        return []
    count = math.ceil(len(unique) / group_size)
    base, extra = divmod(len(unique), count)
    groups = []
    start = 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        groups.append(tuple(unique[start:end]))
        start = end
    return groups


async def sign_encrypt_groups(
    backend: SignEncrypt,
    data: bytes,
    recipients: Sequence[str],
    signer: str,
    *,
    group_size: int,
) -> list[Sealed]:
    """Sign and encrypt ``data`` once per group of ``recipients``, groups in parallel.

    The backend bounds how many run at once. One backend call per group; if any fails, the
    others are cancelled and its ``CryptoError`` is raised (no partial result).
    """
    groups = plan_groups(recipients, group_size)
    if not groups:
        raise CryptoError("no recipients to encrypt to")
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(backend.sign_encrypt(data, group, signer)) for group in groups]
    except ExceptionGroup as failed:
        # One group's CryptoError (the others were cancelled) is the post's error; an
        # exception raised inside an ``except*`` clause would come out wrapped again.
        crypto = [e for e in failed.exceptions if isinstance(e, CryptoError)]
        if crypto and len(crypto) == len(failed.exceptions):
            raise crypto[0] from None
        raise
    return [Sealed(group, task.result()) for group, task in zip(groups, tasks, strict=True)]


async def sign_encrypt_each(
    backend: SignEncrypt,
    data: bytes,
    recipients: Sequence[str],
    signer: str,
    *,
    group_size: int,
) -> AsyncGenerator[Sealed, None]:
    """Like :func:`sign_encrypt_groups`, but each group's message as soon as it is made
    (in the order they finish), so that the first group's mail can be queued and sent
    while gpg still works on the others.

    A failing group raises its ``CryptoError`` after the groups yielded before it; the
    groups still running are cancelled (so is everything when the consumer stops early).
    """
    groups = plan_groups(recipients, group_size)
    if not groups:
        raise CryptoError("no recipients to encrypt to")

    async def seal(group: tuple[str, ...]) -> Sealed:
        return Sealed(group, await backend.sign_encrypt(data, group, signer))

    tasks = [asyncio.ensure_future(seal(group)) for group in groups]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        # Wait for the cancelled ones, so that no gpg run outlives the post's rendering.
        await asyncio.gather(*tasks, return_exceptions=True)


def make_backend(
    name: str, keyring: Keyring, *, hide_recipients: bool = True, parallel: int | None = None
) -> SignEncrypt:
    """The backend ``crypto.backend`` names (the config reader has checked the combination)."""
    if name == "sequoia":
        from secir_bot.crypto.sequoia import SequoiaBackend  # optional dependency

        return SequoiaBackend(keyring, hide_recipients=hide_recipients, parallel=parallel)
    return GpgBackend(keyring, hide_recipients=hide_recipients, parallel=parallel)
