"""What the operators share: waiting for a condition, and what they saw or received."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.05)


@dataclass
class ReceivedMail:
    raw: bytes
    headers: email.message.Message
    text: str = ""
    subject: str | None = None
    signer: str | None = None
    decrypted: bool = False
    plaintext: bytes = b""  # what the member's gpg decrypted


@dataclass
class SeenEvent:
    room_id: str
    event_id: str
    sender: str
    body: str
    msgtype: str
    decrypted: bool
    content: dict[str, Any]
