"""The email bridge's ``SmtpSender.deliver`` over the pipelined sender: retry semantics kept.

Recipients the server accepted are recorded as done and never sent again, a 4xx for a
recipient makes the row transient (only those recipients are retried), a 5xx is refused
and reported, every recipient refused is permanent, and a refused DATA is transient or
permanent by its code. The server is aiosmtpd offering PIPELINING and answering as each
test needs (``Scripted`` in test_smtpsend.py), so the pipelined path is what runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP as SMTPServer
from test_smtpsend import Scripted

from secir_bot.bridges.email.smtp import SmtpSender
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.health import Health, where_of
from secir_bot.model import Channel
from secir_bot.sandbox.world import offline_config
from secir_bot.store import NewDelivery, OutboxRow, Store

PEOPLE = tuple(f"m{i}@nic.test" for i in range(5))


@pytest_asyncio.fixture
async def bridge(directory: Path) -> AsyncIterator[tuple[SmtpSender, Scripted, Store]]:
    handler = Scripted()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(handler, hostname="mx.nic.test", loop=loop), "127.0.0.1", 0
    )
    config = offline_config(directory, "nic.test")
    smtp = dataclasses.replace(
        config.smtp, port=server.sockets[0].getsockname()[1], security="plain", max_recipients=2
    )
    config = dataclasses.replace(config, smtp=smtp)
    store = Store.open(config.store_path, create=True)

    health = Health(lambda text: None, 300.0, lambda: "", where_of(config))
    sender = SmtpSender(config, store, health)
    try:
        yield sender, handler, store
    finally:
        await sender.close()
        store.close()
        server.close()
        await server.wait_closed()


def _row(store: Store) -> OutboxRow:
    store.outbox.enqueue(
        NewDelivery(
            channel=Channel.EMAIL,
            target="list",
            kind="post",
            payload=b"Subject: x\r\n\r\nhello\r\n",
            recipients=PEOPLE,
        )
    )
    (row,) = store.outbox.pending(Channel.EMAIL)
    return row


async def test_done_recipients_are_kept_and_only_deferred_ones_retried(
    bridge: tuple[SmtpSender, Scripted, Store],
) -> None:
    email, handler, store = bridge
    handler.rcpt = {"m1@nic.test": "451 4.3.0 later", "m3@nic.test": "550 5.1.1 unknown"}
    row = _row(store)

    with pytest.raises(TransientDeliveryError, match=r"deferred by the server: m1@nic\.test$"):
        await email.deliver(row)
    (row,) = store.outbox.pending(Channel.EMAIL)
    assert set(row.done) == set(PEOPLE) - {"m1@nic.test"}
    assert handler.delivered == [["m0@nic.test"], ["m2@nic.test"], ["m4@nic.test"]]

    handler.rcpt = {}
    result = await email.deliver(row)

    assert handler.delivered[3:] == [["m1@nic.test"]]  # nobody got it twice
    # As before the pipelined sender: the refusal of m3 was only known to the first attempt,
    # which ended transient, so the final result does not name it (see the report).
    assert result.summary == "sent to 5 recipient(s)"
    assert result.refused == ()


async def test_every_recipient_refused_is_permanent(
    bridge: tuple[SmtpSender, Scripted, Store],
) -> None:
    email, handler, store = bridge
    handler.rcpt = {p: "550 5.1.1 unknown" for p in PEOPLE}

    with pytest.raises(PermanentDeliveryError, match="every recipient was refused"):
        await email.deliver(_row(store))


@pytest.mark.parametrize(
    ("answer", "error"),
    [("554 5.3.4 too big", PermanentDeliveryError), ("452 4.3.1 full", TransientDeliveryError)],
)
async def test_a_refused_data_is_permanent_or_transient_by_its_code(
    bridge: tuple[SmtpSender, Scripted, Store], answer: str, error: type[Exception]
) -> None:
    email, handler, store = bridge
    handler.data = answer

    with pytest.raises(error, match=answer[:3]):
        await email.deliver(_row(store))
    (row,) = store.outbox.pending(Channel.EMAIL)
    assert row.done == ()
