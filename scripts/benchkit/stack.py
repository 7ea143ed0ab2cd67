"""The real servers and the people on them: Synapse, Postfix + Dovecot, Matrix clients.

Synapse is the package's sandbox launcher; Postfix + Dovecot is the test suite's
``MailStack`` (``tests/servers.py``, imported from there). Three Matrix users have their own
E2E devices (matrix-nio, as in the tests): the admin who creates the encrypted rooms, a
member who posts, and a member who reads. The reader stamps the arrival time of every
decrypted message.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nio import MatrixRoom, RoomMessageNotice, RoomMessageText

from secir_bot.sandbox.operators import MatrixOperator
from secir_bot.sandbox.synapse import Synapse

from .people import DOMAIN

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from servers import MailStack  # noqa: E402 - the test suite's launcher, found through sys.path


@dataclass
class Arrival:
    at: float  # time.time() when the reader's client had decrypted it
    event_id: str
    sender: str
    body: str
    content: dict[str, Any]


@dataclass
class Reader:
    """Timestamps every message the reader's own Matrix client decrypted."""

    operator: MatrixOperator
    arrivals: list[Arrival] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.operator.client.add_event_callback(
            self._on_message, (RoomMessageText, RoomMessageNotice)
        )

    async def _on_message(self, room: MatrixRoom, event: Any) -> None:
        self.arrivals.append(
            Arrival(
                time.time(),
                str(event.event_id),
                str(event.sender),
                str(event.body),
                dict(event.source.get("content") or {}),
            )
        )
        self.changed.set()

    def find(self, marker: str, since: float = 0.0) -> Arrival | None:
        return next((a for a in self.arrivals if a.at >= since and marker in a.body), None)

    async def wait(self, marker: str, since: float, timeout: float) -> Arrival:
        """The first message carrying ``marker`` that arrived after ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            found = self.find(marker, since)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the reader saw no message with {marker} in {timeout:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@dataclass
class Stack:
    synapse: Synapse
    mail: MailStack
    tag: str
    directory: Path
    bot_user: dict[str, Any] = field(default_factory=dict)
    bot_password: str = ""
    admin: MatrixOperator | None = None
    poster: MatrixOperator | None = None
    reader: Reader | None = None
    incident_room: str = ""
    control_room: str = ""

    @property
    def list_address(self) -> str:
        return f"list@{DOMAIN}"

    @classmethod
    async def start(cls, directory: Path) -> Stack:
        synapse = Synapse.start()
        try:
            mail = MailStack.start({f"list@{DOMAIN}": "pw-list"})
        except BaseException:
            synapse.stop()
            raise
        stack = cls(synapse, mail, secrets.token_hex(3), directory)
        try:
            await stack._people()
        except BaseException:
            await stack.close()
            raise
        return stack

    def _operator(self, role: str) -> MatrixOperator:
        reg = self.synapse.register(f"{role}-{self.tag}", f"pw-{role}-{self.tag}")
        path = self.directory / "clients" / role
        return MatrixOperator(
            self.synapse.url, reg["user_id"], reg["device_id"], reg["access_token"], path
        )

    async def _people(self) -> None:
        self.bot_password = f"pw-bot-{self.tag}"
        self.bot_user = self.synapse.register(f"secir-{self.tag}", self.bot_password)
        self.admin = self._operator("admin")
        self.poster = self._operator("poster")
        self.reader = Reader(self._operator("reader"))
        for op in (self.admin, self.poster, self.reader.operator):
            await op.start()
        bot = self.bot_user["user_id"]
        self.incident_room = await self.admin.create_room(
            f"SECIR bench {self.tag}", [bot, self.poster.user_id, self.reader.operator.user_id]
        )
        self.control_room = await self.admin.create_room(f"SECIR bench control {self.tag}", [bot])
        for op in (self.poster, self.reader.operator):
            await op.wait_joined(self.incident_room, [op.user_id], timeout=30)

    async def bot_ready(self) -> None:
        """After the bot's (first) start: everyone sees it joined and knows its device."""
        assert self.admin is not None and self.poster is not None and self.reader is not None
        bot = self.bot_user["user_id"]
        await self.admin.wait_joined(self.incident_room, [bot], timeout=60)
        await self.admin.wait_joined(self.control_room, [bot], timeout=60)
        for op in (self.poster, self.reader.operator):
            await op.wait_joined(self.incident_room, [bot], timeout=60)
            await op.know_devices_of(bot)

    async def close(self) -> None:
        for op in (self.admin, self.poster, self.reader.operator if self.reader else None):
            if op is not None:
                await op.stop()
        self.mail.stop()
        self.synapse.stop()
