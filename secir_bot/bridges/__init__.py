"""Bridges: one adapter per channel, sharing one small Protocol and nothing else.

A bridge turns its outside world into inbox items (``run``) and delivers outbox rows
(``deliver``). Failures of delivery are reported as ``TransientDeliveryError`` (retry
later) or ``PermanentDeliveryError`` (dead letter); library errors never escape.
"""

from __future__ import annotations

from typing import Protocol

from secir_bot.model import Channel
from secir_bot.store import OutboxRow


class Bridge(Protocol):
    channel: Channel

    async def run(self) -> None:
        """Receive for as long as the app runs (reconnecting by itself)."""

    async def deliver(self, row: OutboxRow) -> str:
        """Deliver one outbox row; return a short result (event id, server answer)."""
