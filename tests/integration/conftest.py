"""The ``world`` fixture: a list with members on real servers and the bot running."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from servers import MailStack

from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import World


@pytest_asyncio.fixture
async def world_unstarted(synapse: Synapse, mail_stack: MailStack) -> AsyncIterator[World]:
    # A short path: the bot's GnuPG home lives below it and gpg-agent's socket path is limited.
    directory = Path(tempfile.mkdtemp(prefix="w"))
    w = World(
        synapse=synapse,
        directory=directory,
        domain="test.example",
        mail_host="127.0.0.1",
        smtp_port=mail_stack.smtp_port,
        imap_port=mail_stack.imap_port,
        add_mail_user=mail_stack.add_user,
    )
    try:
        yield w
    finally:
        await w.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest_asyncio.fixture
async def world(world_unstarted: World) -> AsyncIterator[World]:
    await world_unstarted.setup()
    await world_unstarted.start_bot()
    yield world_unstarted
