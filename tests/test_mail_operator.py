"""The sandbox's mail member reads its mailbox without leaving a connection behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import aioimaplib
import pytest
from servers import MailStack

from secir_bot.crypto import Keyring
from secir_bot.sandbox.operators import MailOperator


def connections_to(port: int) -> list[str]:
    """The states of this process's TCP sockets connected to ``port``."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                ours.add(target[len("socket:[") : -1])
    states = []
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in ours and int(fields[2].split(":")[1], 16) == port:
            states.append(fields[3])
    return states


async def test_a_failed_read_of_the_mailbox_closes_its_connection(
    mail_stack: MailStack, tmp_path: Path
) -> None:
    bob = MailOperator(
        address="bob@test.example",
        name="Bob",
        keyring=Keyring(tmp_path),
        fingerprint="",
        password="not bob's password",
        smtp_port=mail_stack.smtp_port,
        imap_port=mail_stack.imap_port,
    )
    with pytest.raises(aioimaplib.Abort):  # no SELECT without a login
        await bob.fetch_all()
    assert connections_to(mail_stack.imap_port) == []
