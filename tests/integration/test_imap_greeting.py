"""A connection lost while the bot greets or logs in to IMAP is noticed at once.

Dovecot restarted while the bot reconnects after an outage, or a NAT dropping the flow: the
server is gone before its greeting, before its answer to the CAPABILITY that aioimaplib asks
right after the greeting, during the LOGIN, or in the middle of the TLS handshake.
aioimaplib is told of the loss but leaves the greeting and the LOGIN waiting for their
timeouts (a minute each), and only then did the bot's reconnect back-off begin. A fault proxy
(``faultproxy``, a seam we own) in front of the real Dovecot cuts the bot's first
connections at those moments and lets the later ones through: the mail sent meanwhile must
reach the bot well before the minute it used to wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from faultproxy import (
    GREETING,
    IMAP_CAPABILITY,
    IMAP_CREATE,
    IMAP_LOGIN,
    TLS_HELLO,
    FaultProxy,
    fault_proxy,
)
from servers import MailStack, TestCA, password_for
from test_imap_arrivals import LIST, Deciding, deliver, list_config, running

from secir_bot.bridges.email import conn
from secir_bot.bridges.email.conn import probe_imap
from secir_bot.bridges.email.imap import ImapReceiver
from secir_bot.config import Config
from secir_bot.health import Health, Link, where_of
from secir_bot.sandbox.operators import wait_until
from secir_bot.store import Store

CUTS = 2  # connections cut before one is let through: the back-off waits 1 s, then 2 s
CUTS_AT = {"greeting": GREETING, "capability": IMAP_CAPABILITY, "login": IMAP_LOGIN}


@pytest.fixture
def direct(mail_stack: MailStack, directory: Path) -> Config:
    """The list's config, straight to Dovecot (for the test's own sessions)."""
    return list_config(mail_stack, directory)


@pytest_asyncio.fixture
async def store(directory: Path) -> AsyncIterator[Store]:
    store = Store.open(directory / "store", create=True)
    yield store
    store.close()


class Watched(Health):
    """The bot's link states, with every reason a link was down noted, and the admins'
    notices kept."""

    def __init__(self, config: Config) -> None:
        self.told: list[str] = []
        self.downs: list[str] = []
        super().__init__(self.told.append, 300.0, lambda: "", where_of(config))

    def down(self, link: Link, reason: str) -> None:
        self.downs.append(reason)
        super().down(link, reason)


def _through(config: Config, proxy: FaultProxy, **imap: object) -> Config:
    return dataclasses.replace(
        config,
        imap=dataclasses.replace(config.imap, port=proxy.port, **imap),  # type: ignore[arg-type]
    )


async def _recovers(
    mail_stack: MailStack, direct: Config, store: Store, bot: Config, proxy: FaultProxy
) -> None:
    """The bot behind ``proxy``: its first connections are cut, a mail sent after the first
    cut is read within 30 s (the bot used to wait a minute per cut before it retried)."""
    subject = f"after the cut {uuid.uuid4().hex}"
    intake = Deciding(store)
    health = Watched(bot)
    receiver = ImapReceiver(bot, store, intake, lambda t: None, health)
    async with running(receiver):
        await wait_until(lambda: proxy.cuts >= 1, 30, "the first connection cut")
        await deliver(mail_stack, direct, subject)
        await wait_until(lambda: subject in intake.subjects, 30, "the mail after the cuts")
    assert proxy.cuts == CUTS
    assert proxy.connections > CUTS
    # Each cut was an outage of the network (reconnect, told if it lasts), none a fault
    # the admins would be asked to fix at once, and the link is up again.
    assert len(health.downs) == CUTS, health.downs
    assert health.told == []
    assert not health.is_down(Link.IMAP)


@pytest.mark.parametrize("cut", CUTS_AT)
async def test_a_connection_cut_before_the_session_is_noticed_at_once(
    mail_stack: MailStack, direct: Config, store: Store, cut: str
) -> None:
    async with fault_proxy(mail_stack.imap_port, CUTS_AT[cut], CUTS) as proxy:
        await _recovers(mail_stack, direct, store, _through(direct, proxy), proxy)


async def test_a_tls_handshake_cut_is_noticed_at_once(
    mail_stack: MailStack, direct: Config, store: Store, test_ca: TestCA
) -> None:
    async with fault_proxy(mail_stack.imaps_port, TLS_HELLO, CUTS) as proxy:
        bot = _through(direct, proxy, security="tls", ca_file=test_ca.ca)
        await _recovers(mail_stack, direct, store, bot, proxy)


def _where(task: asyncio.Task[object]) -> str:
    """The file of the code a task runs."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code.co_filename if code is not None else ""


@pytest.mark.parametrize("cut", CUTS_AT)
async def test_doctor_names_a_cut_connection_as_the_network(
    mail_stack: MailStack, direct: Config, cut: str
) -> None:
    """`secir-bot doctor`'s probe says what happened, at once, and the next probe passes."""
    async with fault_proxy(mail_stack.imap_port, CUTS_AT[cut], 1) as proxy:
        config = _through(direct, proxy)
        password = password_for(LIST)
        async with asyncio.timeout(30):  # the probe used to wait a minute
            failed = await probe_imap(config.imap, password)
        assert failed.failure is not None
        assert failed.failure.kind == "network"
        assert "connection" in failed.failure.text.lower()
        # Nothing of that connection waits on: aioimaplib's answer to the greeting (its
        # CAPABILITY) has no deadline, and waited for ever on a connection cut before it.
        await wait_until(
            lambda: not [t for t in asyncio.all_tasks() if "aioimaplib" in _where(t)],
            10,
            "aioimaplib's tasks to end",
        )
        passed = await probe_imap(config.imap, password)
        assert passed.failure is None
        assert passed.folders[config.imap.mailbox]


async def test_a_server_silent_after_its_greeting_is_given_up_at_the_connect_deadline(
    mail_stack: MailStack, direct: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dovecot greets, and its answer to the CAPABILITY that aioimaplib asks then never
    comes (the flow goes silent): aioimaplib's deadline cancels a wait that cannot end (it
    waits for a lock the unanswered command holds), so the bot hung for ever. It now gives
    up at CONNECT_TIMEOUT (shortened here), and the next attempt passes."""
    monkeypatch.setattr(conn, "CONNECT_TIMEOUT", 2.0)
    async with fault_proxy(mail_stack.imap_port, IMAP_CAPABILITY, 1, stall=True) as proxy:
        config = _through(direct, proxy)
        password = password_for(LIST)
        async with asyncio.timeout(30):
            failed = await probe_imap(config.imap, password)
        assert proxy.cuts == 1
        assert failed.failure is not None
        assert failed.failure.kind == "network"
        assert "no greeting from the IMAP server in 2 s" in failed.failure.text
        passed = await probe_imap(config.imap, password)
        assert passed.failure is None


async def test_a_stop_while_the_folders_are_made_is_not_held_up_by_a_logout(
    mail_stack: MailStack, direct: Config, store: Store
) -> None:
    """Logged in, the bot makes its folders, and the server leaves the CREATE unanswered
    (the flow goes silent): a stop then closes the socket at once. A LOGOUT would wait
    behind the unanswered CREATE for its 5 s before the socket was closed."""
    async with fault_proxy(mail_stack.imap_port, IMAP_CREATE, 1, stall=True) as proxy:
        bot = _through(direct, proxy)
        receiver = ImapReceiver(bot, store, Deciding(store), lambda t: None, Watched(bot))
        task = asyncio.create_task(receiver.run())
        try:
            await wait_until(lambda: proxy.cuts == 1, 30, "the CREATE left unanswered")
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=4)  # a LOGOUT's wait is 5 s
            assert done, "the stopped set-up still waits (for a LOGOUT)"
            assert task.cancelled()  # the stop stays a stop
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
