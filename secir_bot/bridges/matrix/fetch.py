"""A member's file, fetched at intake: downloaded, its hash checked, decrypted, stored.

Run by the bridge when a trusted member's media event has been decrypted (``parked.py``),
before the event becomes an item to decide, so that the file is durable with the event and
the steps never wait on the homeserver. What is stored is the file as the member sent it,
or why it could not be had (not encrypted, a malformed ``file``, larger than the list's
limit, gone, changed on the server): the steps turn a problem into a refusal that the
sender and the admins are told.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from secir_bot.bridges.matrix.client import MatrixClient
from secir_bot.bridges.matrix.media import MediaRef, decrypt_media, parse_media
from secir_bot.config import Config
from secir_bot.fidelity.reasons import Refusal
from secir_bot.store import Store, StoredMedia

log = logging.getLogger(__name__)


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


async def _download(client: MatrixClient, ref: MediaRef, limit: int) -> bytes | Refusal:
    """The file's plaintext, or why not. A file that says it is larger than the list's
    limit is not downloaded at all; AES-CTR adds no bytes, so the ciphertext's size is the
    file's."""
    if ref.declared_size is not None and ref.declared_size > limit:
        return Refusal(
            "attachment-too-large",
            {"name": ref.filename, "size": ref.declared_size, "limit": limit},
        )
    try:
        resp = await client.download(ref.url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("download of %s failed: %r", ref.url, exc)
        return Refusal("media-unavailable", {"name": ref.filename})
    body = getattr(resp, "body", None)
    if not isinstance(body, bytes):
        return Refusal("media-unavailable", {"name": ref.filename})
    if len(body) > limit:
        return Refusal(
            "attachment-too-large", {"name": ref.filename, "size": len(body), "limit": limit}
        )
    return decrypt_media(body, ref.file, ref.filename)
