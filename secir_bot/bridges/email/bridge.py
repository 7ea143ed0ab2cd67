"""The email bridge as the app sees it: one object behind the Bridge protocol.

It composes the list mailbox's receiver (``imap``) and the outbox's sender (``smtp``); both
report their links' state to ``health``.
"""

from __future__ import annotations

from collections.abc import Callable

from secir_bot.bridges import Intake, Receipt
from secir_bot.bridges.email.imap import ImapReceiver
from secir_bot.bridges.email.smtp import SmtpSender
from secir_bot.config import Config
from secir_bot.health import Health, where_of
from secir_bot.model import Channel
from secir_bot.store import OutboxRow, Store


class EmailBridge:
    channel = Channel.EMAIL

    def __init__(
        self,
        config: Config,
        store: Store,
        intake: Intake,
        notify: Callable[[str], None] = lambda text: None,
        health: Health | None = None,
    ) -> None:
        self.health = health or Health(
            notify, config.delivery.outage_notice_after, lambda: "", where_of(config)
        )
        self.receiver = ImapReceiver(config, store, intake, notify, self.health)
        self.sender = SmtpSender(config, store, self.health)
        self.connected = self.receiver.connected  # set while an IMAP session is up

    async def run(self) -> None:
        await self.receiver.run()

    async def deliver(self, row: OutboxRow) -> Receipt:
        return await self.sender.deliver(row)

    async def close(self) -> None:
        """Quit the SMTP sessions kept for the next delivery (each IMAP session closes its
        own)."""
        await self.sender.close()
