"""A member's file, fetched at intake: downloaded, its hash checked, decrypted, stored.

Run by the bridge when a trusted member's media event has been decrypted (``parked.py``),
in a task of its own beside the sync loop, before the event becomes an item to decide, so
that the file is durable with the event, the steps never wait on the homeserver, and a
slow download never holds up the sync. What is stored is the file as the member sent it,
or why it could not be had (not encrypted, a malformed ``file``, larger than the list's
limit, gone, changed on the server): the steps turn a problem into a refusal that the
sender and the admins are told. The download is the bridge's own request (not nio's, which
reads the whole body into memory and has no timeout): it stops reading past the limit, and
tries a transient failure again before refusing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlparse

import aiohttp

from secir_bot.bridges.matrix.client import MatrixClient, quoted
from secir_bot.bridges.matrix.media import MediaRef, decrypt_media, parse_media
from secir_bot.config import Config
from secir_bot.fidelity.reasons import Refusal
from secir_bot.store import Store, StoredMedia

log = logging.getLogger(__name__)

DOWNLOAD_TRIES = 4  # a transient failure is tried again up to this many attempts in all
DOWNLOAD_BACKOFF = 1.0  # seconds before the second attempt; doubled for each further one
DOWNLOAD_TIMEOUT = 120  # seconds for one whole download


async def fetch_media(
    client: MatrixClient, store: Store, config: Config, event: dict[str, Any]
) -> None:
    """Store the file of ``event`` (a decrypted media message), or why there is none."""
    content = event.get("content")
    if not isinstance(content, dict):
        return
    found = parse_media(content)
    if found is None:
        return  # not a media message
    event_id = str(event.get("event_id", ""))
    if isinstance(found, Refusal):
        name = str(found.params.get("name", "file"))
        store.media.put(StoredMedia(event_id, name, "", None, found.text()))
        return
    result = await _download(client, found, config.list.attachments.max_bytes)
    problem = result.text() if isinstance(result, Refusal) else None
    data = result if isinstance(result, bytes) else None
    store.media.put(StoredMedia(event_id, found.filename, found.content_type, data, problem))
    log.info("file of %s fetched (%s)", event_id, problem or f"{len(data or b'')} bytes")


async def _download(
    client: MatrixClient,
    ref: MediaRef,
    limit: int,
    *,
    tries: int = DOWNLOAD_TRIES,
    backoff: float = DOWNLOAD_BACKOFF,
) -> bytes | Refusal:
    """The file's plaintext, or why not. A file that says it is larger than the list's
    limit is not downloaded at all; one that says less is read only up to the limit, since
    ``info.size`` is the sender's word (AES-CTR adds no bytes, so the ciphertext's size is
    the file's). A transient failure (no answer, a timeout, 429, 5xx) is tried again after
    a growing pause; any other answer is final at once."""
    if ref.declared_size is not None and ref.declared_size > limit:
        return Refusal(
            "attachment-too-large",
            {"name": ref.filename, "size": ref.declared_size, "limit": limit},
        )
    unavailable = Refusal("media-unavailable", {"name": ref.filename})
    for attempt in range(1, tries + 1):
        try:
            body = await _read_capped(client, ref.url, limit)
        except _Transient as exc:
            if attempt == tries:
                log.warning("download of %s failed %d times (%s)", ref.url, tries, exc)
                return unavailable
            pause = backoff * 2 ** (attempt - 1)
            log.warning("download of %s failed (%s); retrying in %.1fs", ref.url, exc, pause)
            await asyncio.sleep(pause)
            continue
        if body is None:
            return unavailable
        if len(body) > limit:
            return Refusal(
                "attachment-too-large", {"name": ref.filename, "size": len(body), "limit": limit}
            )
        return decrypt_media(body, ref.file, ref.filename)
    return unavailable  # tries < 1


class _Transient(Exception):
    """A download failure that may pass: no answer, a timeout, 429 or a 5xx."""


async def _read_capped(client: MatrixClient, mxc: str, limit: int) -> bytes | None:
    """The media's bytes, at most ``limit + 1`` of them (enough to know it is too big), or
    None when the homeserver answers that it has no such file (or refuses it for good)."""
    parsed = urlparse(mxc)
    server, media_id = parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme != "mxc" or not server or not media_id or "/" in media_id:
        return None
    path = f"/_matrix/client/v1/media/download/{quoted(server)}/{quoted(media_id)}"
    headers = {"Authorization": f"Bearer {client.access_token}"}
    try:
        resp = await client.send("GET", path, headers=headers, timeout=DOWNLOAD_TIMEOUT)
        async with resp:
            if resp.status == 429 or resp.status >= 500:
                raise _Transient(f"HTTP {resp.status}")
            if resp.status != 200:
                log.warning("download of %s refused: HTTP %d", mxc, resp.status)
                return None
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    break  # too big: the rest is not read
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Transient(type(exc).__name__) from exc
