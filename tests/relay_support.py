"""What the tests of deciding and of the list mail share: a list with members (real gpg, no
servers), its decider, signed member mail, and a list-mail backend held by the test."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from secir_bot.app import decider
from secir_bot.bridges.email.render import EmailRenderer
from secir_bot.crypto import Keyring
from secir_bot.inbox import Decider
from secir_bot.members import MemberRequest, add_member
from secir_bot.model import Channel, Member, Outcome
from secir_bot.sandbox.world import offline_config
from secir_bot.steps import Services
from secir_bot.store import InboxItem, OutboxRow, Store


class Setup:
    def __init__(self, root: Path) -> None:
        self.config = offline_config(root, "relay.test")
        self.store = Store.open(self.config.store_path, create=True)
        self.ring = Keyring.create(self.config.store_path / "gnupg")
        self.members_home = Path(tempfile.mkdtemp(prefix="gr"))
        self.members_ring = Keyring.create(self.members_home)
        self.members: list[Member] = []
        self.deciders: list[Decider] = []  # stopped at the end (list mail still being made)

    async def add(self, n: int) -> None:
        while len(self.members) < n:
            i = len(self.members)
            fpr = await self.members_ring.generate(f"M {i}", f"m{i}@relay.test")
            self.members.append(
                await add_member(
                    self.store,
                    self.ring,
                    MemberRequest(
                        tld="nl",
                        name=f"M {i}",
                        email=f"m{i}@relay.test",
                        rank=1 + i % 3,
                        key=await self.members_ring.export_public(fpr),
                        channels="email",
                    ),
                )
            )


def decider_of(setup: Setup, list_fpr: str) -> Decider:
    made = decider(Services(setup.config, setup.store, setup.ring, list_fpr, "@bot:x"))
    setup.deciders.append(made)
    return made


@contextlib.asynccontextmanager
async def relay_setup() -> AsyncIterator[Setup]:
    """A list's store and keyring, members' keys apart; the deciders made stopped after."""
    root = Path(tempfile.mkdtemp(prefix="rl"))
    s = Setup(root)
    try:
        yield s
    finally:
        for made in s.deciders:
            await made.aclose()
        s.ring.close()
        s.members_ring.close()
        s.store.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(s.members_home, ignore_errors=True)


async def signed_mail(
    setup: Setup, list_fpr: str, when: int, text: bytes, by: int = 0, header: str = ""
) -> bytes:
    """An inline mail by member ``by`` (the first), signed with gpg's clock set to ``when``;
    ``header``, extra header lines (each ending in CRLF)."""
    member = setup.members[by]
    await setup.members_ring.import_key(await setup.ring.export_public(list_fpr))
    done = await asyncio.to_thread(
        subprocess.run,
        [
            "gpg",
            "--homedir",
            str(setup.members_home),
            "--batch",
            "--yes",
            "--trust-model",
            "always",
            "--faked-system-time",
            f"{when}!",
            "--armor",
            "--sign",
            "--encrypt",
            "--local-user",
            member.fingerprint,
            "--recipient",
            list_fpr,
        ],
        input=text,
        capture_output=True,
        check=True,
    )
    armored = done.stdout
    return (
        f"From: {member.email}\r\nMessage-ID: <{when}@relay.test>\r\n{header}"
        "Content-Type: text/plain\r\n\r\n"
    ).encode() + armored


class HeldBackend:
    """The list's gpg backend, held until the test lets it go (a seam we own)."""

    name = "held"
    hides_recipients = True

    def __init__(self, ring: Keyring) -> None:
        self.ring = ring
        self.go = asyncio.Event()
        self.calls = 0

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        self.calls += 1
        await self.go.wait()
        return await self.ring.sign_encrypt(data, list(recipients), signer)

    async def aclose(self) -> None:
        return None


def queued(setup: Setup, channel: Channel) -> list[OutboxRow]:
    return setup.store.outbox.due(channel, now=float("inf"))


async def decided_and_mailed(processor: Decider, item: InboxItem) -> Outcome:
    """The item decided, and its post's list mail made (the follow-on stage idle)."""
    outcome = await processor.decide(item)
    await processor.list_mail.idle()
    return outcome


def hold_mail(processor: Decider, held: HeldBackend, group_size: int | None = None) -> None:
    """Let ``held`` make the decider's list mail, in recipient groups of ``group_size``."""
    mail = processor.fanout.mail
    assert isinstance(mail, EmailRenderer)
    mail.backend = held
    if group_size is not None:
        mail.group_size = group_size


def add_matrix_member(setup: Setup, matrix_id: str = "@mx:relay.test") -> None:
    """Mx of .nl, on the roster for the Matrix room only."""
    setup.store.members.add(
        tld="nl",
        tld_display=".nl",
        name="Mx",
        email="mx@relay.test",
        fingerprint="AB" * 20,
        matrix_id=matrix_id,
        channels=frozenset({Channel.MATRIX}),
    )
