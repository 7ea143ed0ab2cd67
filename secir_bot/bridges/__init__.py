"""Bridges: one adapter per channel, sharing one small Protocol and nothing else.

A bridge turns its outside world into inbox items (``run``) and delivers outbox rows
(``deliver``), answering with a ``Receipt``. Failures of delivery are reported as
``TransientDeliveryError`` (retry later) or ``PermanentDeliveryError`` (dead letter);
library errors never escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from secir_bot.model import Channel, LinkKind
from secir_bot.store import OutboxRow


@dataclass(frozen=True)
class Receipt:
    """What one delivery achieved, in fields the outbox reads (never a sentence to parse)."""

    summary: str  # for the log and the row: "sent to 3 recipient(s)", a Matrix event id
    link: tuple[LinkKind, str] | None = None  # the post's own id on this channel, if any
    refused: tuple[str, ...] = ()  # recipients refused for good, each with the server's answer

    @property
    def result(self) -> str:
        """The text recorded with the row (and told to the admins when some refused)."""
        if not self.refused:
            return self.summary
        return f"{self.summary}; refused: " + ", ".join(self.refused)


class Bridge(Protocol):
    channel: Channel

    async def run(self) -> None:
        """Receive for as long as the app runs (reconnecting by itself)."""

    async def deliver(self, row: OutboxRow) -> Receipt:
        """Deliver one outbox row."""

    async def close(self) -> None:
        """Let go of connections and stores (the app calls it once, at the end)."""
