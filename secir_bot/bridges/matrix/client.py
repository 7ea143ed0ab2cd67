"""The bot's Matrix device: its login, its nio client, and raw calls to the homeserver.

The device id and its crypto store (``store/matrix``) are made once by ``secir-bot init``
and never change: a new device would mean new identity keys and stale trust everywhere.
Everything else in the bridge reaches the homeserver through ``MatrixClient`` below, so
that nio stays behind this one module where it can (nio is barely maintained; what we
need and it lacks, such as cross-signing keys, goes through ``api``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    LocalProtocolError,
    LoginResponse,
    MegolmEvent,
    RoomSendResponse,
)
from nio.store import DefaultStore

from secir_bot.config import Config
from secir_bot.errors import ServiceError, StoreError, StoreMissing

log = logging.getLogger(__name__)

CREDENTIALS = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    user_id: str
    device_id: str
    access_token: str
    pickle_key: str

    @staticmethod
    def exist(directory: Path) -> bool:
        """Whether ``directory`` holds a login; creates the directory (0700) if missing."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return (directory / CREDENTIALS).exists()

    @classmethod
    def load(cls, directory: Path) -> Credentials:
        path = directory / CREDENTIALS
        if not path.exists():
            raise StoreMissing(f"no Matrix login in {directory}: run 'secir-bot init' first")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**data)

    def save(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(directory / CREDENTIALS, json.dumps(self.__dict__))


def write_private(path: Path, text: str) -> None:
    """Write a file that only the bot's user may read (0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


class ApiError(Exception):
    """A homeserver answer other than 200, or no answer (``status`` 0)."""

    def __init__(self, status: int, body: dict[str, Any], what: str) -> None:
        self.status = status
        self.body = body
        self.errcode = str(body.get("errcode", "")) if isinstance(body, dict) else ""
        super().__init__(f"{what}: HTTP {status} {self.errcode} {body.get('error', '')}".strip())


class MatrixClient(AsyncClient):  # type: ignore[misc]
    """nio's AsyncClient, hardened, plus raw calls for what nio does not do.

    nio decrypts while it digests a sync response; a malformed to-device message or room
    event (sent by anyone on any homeserver) makes it raise from inside ``sync()``, which
    would stop the bot on every restart. Such an event is logged by id and left alone.
    Room events are not decrypted here at all: the bridge stores each one encrypted first
    and decrypts it itself (``parked.py``), so that it sees the encrypted envelope next to
    the result.
    """

    def _handle_decrypt_to_device(self, to_device_event: Any) -> Any:
        try:
            return super()._handle_decrypt_to_device(to_device_event)
        except Exception as exc:
            log.warning(
                "undecryptable to-device message from %s ignored: %s",
                getattr(to_device_event, "sender", "?"),
                type(exc).__name__,
            )
            return None

    def _handle_timeline_event(
        self, event: Any, room_id: str, room: Any, encrypted_rooms: set[str]
    ) -> Any:
        if isinstance(event, MegolmEvent):
            event.room_id = room_id
            return None
        try:
            return super()._handle_timeline_event(event, room_id, room, encrypted_rooms)
        except Exception as exc:
            log.warning(
                "event %s in %s could not be handled: %s",
                getattr(event, "event_id", "?"),
                room_id,
                type(exc).__name__,
            )
            return None

    def _handle_messages_response(self, response: Any) -> None:
        """History pages (``/messages``) stay encrypted too, for the same reason."""

    async def send_encrypted(
        self, room_id: str, event_type: str, content: dict[str, Any], tx_id: str
    ) -> Any:
        """Send an event already encrypted (``encrypt``), as nio's ``room_send`` ends:
        the same request, transaction id and answers (``RoomSendResponse`` or an error
        response), 429 and timeouts retried by nio. The encrypting is the caller's, so
        that several of these may be on their way at once."""
        if not self.logged_in:
            raise LocalProtocolError("Not logged in.")
        method, path, data = Api.room_send(self.access_token, room_id, event_type, content, tx_id)
        return await self._send(RoomSendResponse, method, path, data, (room_id,))

    async def api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        what: str = "",
    ) -> dict[str, Any]:
        """One client-server API call with the bot's token; the JSON answer.

        ``path`` starts after ``/_matrix/client``; raises ``ApiError`` for any answer but
        200 and for network failures (status 0).
        """
        headers = {"Authorization": f"Bearer {self.access_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        try:
            resp = await self.send(method, "/_matrix/client" + path, data, headers)
            async with resp:
                try:
                    answer = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    answer = {}
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, {"error": type(exc).__name__}, what or path) from exc
        if not isinstance(answer, dict):
            answer = {}
        if status != 200:
            raise ApiError(status, answer, what or path)
        return answer


def quoted(part: str) -> str:
    """A path segment (user ids and room ids hold ``@``, ``!``, ``:``)."""
    return quote(part, safe="")


class KeyStore(DefaultStore):  # type: ignore[misc]
    """nio's store of the bot's keys, without the transaction each sync made for nothing.

    nio saves the rooms that a sync found encrypted after every sync, also when it found
    none: the account looked up and an empty transaction on the store, ~1.2 ms of the
    bot's Python per sync, that is per relayed mail (its own post comes back in the next
    sync). A sync that brings encrypted rooms saves them as before.
    """

    def save_encrypted_rooms(self, rooms: Collection[str]) -> None:
        if rooms:
            super().save_encrypted_rooms(rooms)


def make_client(
    config: Config, directory: Path, pickle_key: str, device_id: str | None = None
) -> MatrixClient:
    cfg = AsyncClientConfig(
        store=KeyStore,
        encryption_enabled=True,
        store_sync_tokens=False,
        pickle_key=pickle_key,
        max_limit_exceeded=10,
        max_timeouts=3,
        request_timeout=60,
    )
    return MatrixClient(
        config.matrix.homeserver,
        config.matrix.user_id,
        device_id=device_id,
        store_path=str(directory),
        config=cfg,
    )


async def login_once(
    config: Config, directory: Path, password: str, pickle_key: str
) -> Credentials:
    """Log the bot's device in (``secir-bot init``); the device id is then kept for ever."""
    if Credentials.exist(directory):
        return Credentials.load(directory)
    client = make_client(config, directory, pickle_key)
    try:
        resp = await client.login(password, device_name=config.matrix.device_name)
        if not isinstance(resp, LoginResponse):
            raise ServiceError(
                f"the homeserver refused the login of {config.matrix.user_id}: {resp}"
            )
        if client.olm is None:
            raise StoreError("Matrix login gave no encryption store; refusing to continue")
        creds = Credentials(resp.user_id, resp.device_id, resp.access_token, pickle_key)
        creds.save(directory)
        if client.should_upload_keys:
            await client.keys_upload()
        return creds
    finally:
        await client.close()


def open_client(config: Config, directory: Path) -> tuple[MatrixClient, Credentials]:
    """The bot's logged-in client from its store; refuses a store that does not match."""
    creds = Credentials.load(directory)
    if creds.user_id != config.matrix.user_id:
        raise StoreError(
            f"the Matrix store belongs to {creds.user_id}, not to "
            f"{config.matrix.user_id}; refusing to start"
        )
    db = directory / f"{creds.user_id}_{creds.device_id}.db"
    if not db.exists():
        raise StoreError(
            f"the crypto store of device {creds.device_id} is missing ({db.name}); "
            "starting would give an existing device new identity keys. Restore "
            "store/matrix from backup, or remove credentials.json and run init again "
            "to register a new device."
        )
    client = make_client(config, directory, creds.pickle_key, creds.device_id)
    client.restore_login(creds.user_id, creds.device_id, creds.access_token)
    if client.olm is None:
        raise StoreError(
            "the Matrix crypto store could not be loaded; refusing to run "
            "without end-to-end encryption"
        )
    return client, creds
