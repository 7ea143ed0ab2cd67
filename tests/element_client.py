"""An Element-grade Matrix member for tests: matrix-js-sdk with its Rust crypto, driven over
JSON lines (``tests/element/client.mjs``).

Each ``ElementOperator`` is one Node process and one new device of its account, logged in
with the account's password. Commands are awaited by id; events (decrypted messages and
decryption failures with their codes) are collected in ``events`` as they arrive.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secir_bot.sandbox.operators import wait_until

HERE = Path(__file__).parent / "element"
CLIENT = HERE / "client.mjs"


def available() -> str | None:
    """Why the client cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "matrix-js-sdk").is_dir():
        return "tests/element/node_modules is missing: run 'make setup'"
    return None


@dataclass
class ElementEvent:
    kind: str  # "message" or "undecryptable"
    room_id: str
    event_id: str
    sender: str
    body: str
    code: str | None
    shield: str | None
    shield_reason: str | None
    content: dict[str, Any]
    encrypted: bool
    highlight: bool  # Element's push rules would highlight it for this user (a ping)


class ElementOperator:
    """One device of a Matrix account, run by matrix-js-sdk as Element would."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.user_id = ""
        self.device_id = ""
        self.events: list[ElementEvent] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(), name="element-client")

    @classmethod
    async def start(
        cls, homeserver: str, user_id: str, password: str, log: Path, timeout: float = 60
    ) -> ElementOperator:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(CLIENT),
                homeserver,
                user_id,
                password,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=HERE,
                env={**os.environ, "NODE_NO_WARNINGS": "1"},
            )
        op = cls(proc, log)
        try:
            await asyncio.wait_for(asyncio.shield(op._ready), timeout)
        except BaseException:
            await op.stop()
            raise
        return op

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" in msg:
                fut = self._waiting.pop(int(msg["id"]), None)
                if fut is not None and not fut.done():
                    if msg.get("ok"):
                        fut.set_result(msg.get("result"))
                    else:
                        fut.set_exception(RuntimeError(str(msg.get("error"))))
            elif msg.get("event") == "ready":
                self.user_id, self.device_id = msg["user_id"], msg["device_id"]
                if not self._ready.done():
                    self._ready.set_result(None)
            elif msg.get("event") in ("message", "undecryptable"):
                self.events.append(
                    ElementEvent(
                        kind=msg["event"],
                        room_id=msg.get("room_id") or "",
                        event_id=msg.get("event_id") or "",
                        sender=msg.get("sender") or "",
                        body=str(msg.get("body") or ""),
                        code=msg.get("code"),
                        shield=msg.get("shield"),
                        shield_reason=msg.get("shield_reason"),
                        content=msg.get("content") or {},
                        encrypted=bool(msg.get("encrypted")),
                        highlight=bool(msg.get("highlight")),
                    )
                )
        failure = RuntimeError(f"the Element client exited; see {self.log}")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(failure)
        if not self._ready.done():
            self._ready.set_exception(failure)

    async def call(self, cmd: str, timeout: float = 60, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        self.proc.stdin.write((json.dumps({"id": self._next, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, timeout)

    async def send_file(
        self, room_id: str, name: str, mimetype: str, data: bytes, **extra: Any
    ) -> str:
        """Post ``data`` as Element does (``caption``, ``html``, ``thread_root`` optional;
        ``thumbnail``: the PNG bytes of its thumbnail); returns the event's id."""
        if isinstance(extra.get("thumbnail"), bytes):
            extra["thumbnail"] = base64.b64encode(extra["thumbnail"]).decode()
        encoded = base64.b64encode(data).decode()
        event_id = await self.call(
            "send_file", room_id=room_id, name=name, mimetype=mimetype, data=encoded, **extra
        )
        return str(event_id)

    async def download_file(self, file: dict[str, Any]) -> bytes:
        """The file of an event's ``file`` object, downloaded and decrypted (hash checked)."""
        return base64.b64decode(await self.call("download_file", file=file))

    async def wait_for(
        self, predicate: Any, timeout: float = 30, what: str = "an event"
    ) -> ElementEvent:
        def found() -> ElementEvent | None:
            return next((e for e in self.events if predicate(e)), None)

        try:
            return await wait_until(found, timeout, what)
        except TimeoutError as exc:
            seen = [(e.kind, e.sender, e.body[:50], e.code) for e in self.events]
            raise TimeoutError(f"{self.user_id}/{self.device_id}: {exc}; saw {seen}") from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("stop", timeout=5)
            with contextlib.suppress(ProcessLookupError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
