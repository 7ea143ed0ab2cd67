"""The Matrix bridge as the app sees it: one object behind the Bridge protocol.

It owns the bot's client and composes the parts: ``sync`` receives, ``trust`` judges
devices, ``send`` delivers, ``xsign`` keeps the bot's own identity (checked, or made when
the store has none, at every start; a bot whose identity is unusable stops loudly).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from secir_bot.bridges import Intake, Receipt
from secir_bot.bridges.matrix.actions import Actions
from secir_bot.bridges.matrix.client import open_client
from secir_bot.bridges.matrix.send import Sender
from secir_bot.bridges.matrix.sync import Receiver
from secir_bot.bridges.matrix.trust import Trust
from secir_bot.bridges.matrix.xsign import ensure_identity
from secir_bot.config import Config
from secir_bot.model import Channel
from secir_bot.store import OutboxRow, Store


class MatrixBridge:
    channel = Channel.MATRIX

    def __init__(
        self,
        config: Config,
        store: Store,
        directory: Path,
        intake: Intake,
        on_work: Callable[[], None],
        notify: Callable[[str], None],
        link: Callable[[bool, str], None] = lambda works, reason: None,
    ) -> None:
        self.config = config
        self.store = store
        self.directory = directory
        self.notify = notify
        self.client, self.creds = open_client(config, directory)
        self.trust = Trust(config, store, self.client, notify, on_work)
        self.receiver = Receiver(
            config,
            store,
            self.client,
            self.trust,
            intake,
            on_work,
            notify,
            self._identity,
            link,
        )
        self.sender = Sender(store, self.client, self.trust)
        self.actions = Actions(self.client, self.sender, self.trust)
        self.synced = self.receiver.synced

    @property
    def user_id(self) -> str:
        return self.creds.user_id

    async def _identity(self) -> None:
        password = (
            self.config.matrix.password.read() if self.config.matrix.password.configured else None
        )
        _, recovery = await ensure_identity(self.client, self.config, self.directory, password)
        if recovery is not None:
            self.notify(
                "The bot made its Matrix cross-signing identity. Its private master key was "
                f"written to {recovery.name} in the store directory: move it offline."
            )

    async def run(self) -> None:
        await self.receiver.run()

    async def deliver(self, row: OutboxRow) -> Receipt:
        return await self.sender.deliver(row)

    async def close(self) -> None:
        await self.client.close()
