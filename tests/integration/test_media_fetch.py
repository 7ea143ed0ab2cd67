"""Downloading a member's file from the real Synapse (issue 10 follow-up): read with a cap,
transient failures tried again, permanent ones refused at once.

The bot's own ``MatrixClient`` talks to a throwaway Synapse; the file is uploaded encrypted
as Element does, and ``_download`` is the bridge's one download path.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from nio import UploadResponse

from secir_bot.bridges.matrix import fetch
from secir_bot.bridges.matrix.client import MatrixClient
from secir_bot.bridges.matrix.media import MediaRef, encrypt_media
from secir_bot.fidelity.reasons import Refusal
from secir_bot.sandbox.scratch import free_port
from secir_bot.sandbox.synapse import Synapse


@pytest.fixture
async def member(synapse: Synapse) -> AsyncIterator[MatrixClient]:
    """A logged-in client of a fresh user on the real Synapse."""
    answer = synapse.register("m" + secrets.token_hex(4), secrets.token_urlsafe(12))
    client = MatrixClient(synapse.url, str(answer["user_id"]))
    client.access_token = str(answer["access_token"])
    try:
        yield client
    finally:
        await client.close()


async def uploaded(client: MatrixClient, data: bytes, declared: int | None) -> MediaRef:
    """``data`` uploaded encrypted; the reference a member's event would carry."""
    media = encrypt_media(data)
    resp, _ = await client.upload(
        lambda *_: media.ciphertext,
        content_type="application/octet-stream",
        filesize=len(media.ciphertext),
    )
    assert isinstance(resp, UploadResponse), resp
    return MediaRef(
        "m.file", media.file(str(resp.content_uri)), "x.log", "text/plain", declared, None
    )


def retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("retrying" in r.getMessage() for r in caplog.records if r.name == fetch.__name__)


async def test_f_media_download_decrypts_the_members_file(member: MatrixClient) -> None:
    data = os.urandom(200_000)
    ref = await uploaded(member, data, len(data))
    assert await fetch._download(member, ref, 1_000_000) == data


async def test_f_media_actual_size_over_the_limit_is_refused_without_reading_it_all(
    member: MatrixClient,
) -> None:
    """The event says 10 bytes, the file is 2 MB: the limit is enforced on what is read,
    and the download stops soon after the limit instead of reading the whole file."""
    ref = await uploaded(member, os.urandom(2_000_000), 10)
    result = await fetch._download(member, ref, 1000)
    assert isinstance(result, Refusal) and result.code == "attachment-too-large"
    size = result.params["size"]
    assert isinstance(size, int) and 1000 < size < 200_000, size


async def test_f_media_missing_media_is_refused_at_once(
    member: MatrixClient, synapse: Synapse, caplog: pytest.LogCaptureFixture
) -> None:
    """A media id the server does not have (deleted, never uploaded) answers 404: final,
    no retry."""
    ref = await uploaded(member, b"x", 1)
    gone = MediaRef(
        ref.msgtype,
        {**ref.file, "url": f"mxc://{synapse.server_name}/NoSuchMedia{secrets.token_hex(6)}"},
        ref.filename,
        ref.content_type,
        1,
        None,
    )
    with caplog.at_level(logging.INFO, logger=fetch.__name__):
        result = await fetch._download(member, gone, 1000, backoff=0.01)
    assert isinstance(result, Refusal) and result.code == "media-unavailable"
    assert retries(caplog) == 0


async def test_f_media_connection_failures_are_retried_then_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No answer from the homeserver (nothing listens on its port) is transient: tried
    again with backoff, refused once the tries are spent."""
    client = MatrixClient(f"http://127.0.0.1:{free_port()}", "@m:test.local")
    client.access_token = "unused"
    ref = MediaRef("m.file", {"url": "mxc://test.local/AbC"}, "x.log", "text/plain", 1, None)
    try:
        with caplog.at_level(logging.INFO, logger=fetch.__name__):
            result = await fetch._download(client, ref, 1000, tries=3, backoff=0.01)
    finally:
        await client.close()
    assert isinstance(result, Refusal) and result.code == "media-unavailable"
    assert retries(caplog) == 2
