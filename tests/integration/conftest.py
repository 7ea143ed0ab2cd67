"""The ``world`` fixture: a list with members on real servers and the bot running."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from servers import MailStack
from worlds import world_on

from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import World


@pytest_asyncio.fixture
async def world_unstarted(synapse: Synapse, mail_stack: MailStack) -> AsyncIterator[World]:
    # A short path: the bot's GnuPG home lives below it and gpg-agent's socket path is limited.
    directory = Path(tempfile.mkdtemp(prefix="w"))
    w = world_on(synapse, mail_stack, directory)
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
