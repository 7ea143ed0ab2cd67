"""Shared fixtures: the real servers every integration test runs against.

All are synchronous, so they work with any event-loop scope: ``synapse`` and ``gpg_world``
live for the whole session, ``mail_stack`` (Postfix + Dovecot, about 0.2 s to start) for one
module.  Launchers are in ``servers.py``; the Synapse one is the package's own sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from servers import MAIL_USERS, TEST_KEYS, GpgWorld, MailStack, TestCA

from secir_bot.sandbox.synapse import Synapse

# Every event loop the tests create runs in asyncio's debug mode: never-awaited coroutines,
# calls from the wrong thread and slow callbacks are reported (read when a loop is created).
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")


@pytest.fixture(scope="session")
def synapse() -> Iterator[Synapse]:
    """A throwaway Synapse (server name ``test.local``); register users with ``.register``."""
    server = Synapse.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gpg_world() -> Iterator[GpgWorld]:
    """Keys for alice, bob, carol, dave, mallory, expired, revoked and signonly @test.example."""
    with GpgWorld.create(TEST_KEYS) as world:
        yield world


@pytest.fixture(scope="session")
def test_ca() -> Iterator[TestCA]:
    """The session's throwaway CA and the mail servers' certificate (for 127.0.0.1)."""
    ca = TestCA.create()
    try:
        yield ca
    finally:
        ca.close()


@pytest.fixture(scope="session")
def wrong_ca() -> Iterator[TestCA]:
    """Another CA, unrelated to the servers' certificate: trusting only it must fail."""
    ca = TestCA.create("unrelated test CA")
    try:
        yield ca
    finally:
        ca.close()


@pytest.fixture(scope="module")
def mail_stack(test_ca: TestCA) -> Iterator[MailStack]:
    """Postfix + Dovecot for ``test.example`` with list, alice, bob, carol, dave and mallory.

    Passwords are ``pw-<localpart>`` (``servers.password_for``). Plain IMAP and SMTP on
    ``imap_port``/``smtp_port``; with ``test_ca``'s certificate, IMAPS on ``imaps_port``,
    SMTP with STARTTLS on ``submission_port`` and SMTPS on ``smtps_port``. SMTP AUTH takes
    the same passwords (and is optional from loopback).
    """
    with MailStack.start(MAIL_USERS, tls=test_ca) as stack:
        yield stack
