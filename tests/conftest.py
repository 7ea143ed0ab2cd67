"""Shared fixtures: the real servers every integration test runs against.

All are synchronous, so they work with any event-loop scope: ``synapse`` and ``gpg_world``
live for the whole session, ``mail_stack`` (Postfix + Dovecot, about 0.2 s to start) for one
module.  Launchers are in ``servers.py``; the Synapse one is the package's own sandbox.

The whole session's log is watched for secrets (``leaks.py``): every password and token the
fixtures make is registered, the bot's and the mail libraries' loggers run at debug level,
and a test during which a secret was logged fails (so does the session, for one logged
outside any test).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import leaks
import pytest
import transports
from servers import MAIL_USERS, TEST_KEYS, GpgWorld, MailStack, TestCA

from secir_bot.sandbox import synapse as synapse_mod
from secir_bot.sandbox.synapse import Synapse

# Every event loop the tests create runs in asyncio's debug mode: never-awaited coroutines,
# calls from the wrong thread and slow callbacks are reported (read when a loop is created).
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")

WATCH = leaks.WATCH
# Debug level where secrets pass by (aioimaplib logs every command it sends). pytest's own
# capture stays at INFO (pyproject.toml), so failure reports are not flooded.
DEBUG_LOGGERS = ("secir_bot", "aioimaplib", "aiosmtplib")


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(WATCH)
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(WATCH)
    if WATCH.leaks:
        print("\nsecrets were logged:\n  " + "\n  ".join(WATCH.leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Connections left open when a test's event loop closed (``transports.py``): closed right
# after that test, before the garbage collector can warn of them in another one. A unit test
# that leaves one fails; an integration test's are listed at the end of the session (as a
# warning of theirs is ignored there, ``integration/conftest.py``).
_LEFT_BY_INTEGRATION: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    result = yield
    left = transports.left_open()
    for one in left:
        transports.shut(one)
    if left and "integration" in item.path.parts:
        _LEFT_BY_INTEGRATION.extend(f"{item.nodeid}: {one.what}" for one in left)
    elif left:
        pytest.fail("connections left open:\n  " + "\n  ".join(one.what for one in left))
    return result


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _LEFT_BY_INTEGRATION:
        terminalreporter.write_sep("-", "connections left open by integration tests (closed)")
        for line in _LEFT_BY_INTEGRATION:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def umask_restored() -> Iterator[None]:
    """A test that runs ``cli.main`` in-process gets its umask (0077) for the process: put the
    previous one back, so no later test or server it starts inherits it by accident."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.fixture(autouse=True)
def no_secret_in_the_log() -> Iterator[None]:
    """Fails the test during which a registered secret reached any log record."""
    before = len(WATCH.leaks)
    yield
    logged = WATCH.leaks[before:]
    if logged:
        del WATCH.leaks[before:]  # reported here, not again at the end of the session
        pytest.fail("secrets were logged during this test:\n  " + "\n  ".join(logged))


@pytest.fixture(scope="session", autouse=True)
def _register_server_secrets() -> Iterator[None]:
    """Every Synapse password, access token and server secret becomes a watched secret."""
    register, make_secrets = Synapse.register, synapse_mod._secrets

    def watched_register(self: Synapse, *args: Any, **kwargs: Any) -> dict[str, Any]:
        account: dict[str, Any] = register(self, *args, **kwargs)
        password = kwargs.get("password", args[1] if len(args) > 1 else "")
        leaks.secret(password, account["access_token"])
        return account

    def watched_secrets(*args: Any, **kwargs: Any) -> dict[str, str]:
        made: dict[str, str] = make_secrets(*args, **kwargs)
        leaks.secret(*made.values())
        return made

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Synapse, "register", watched_register)
        patch.setattr(synapse_mod, "_secrets", watched_secrets)
        yield


@pytest.fixture
def directory() -> Iterator[Path]:
    """A fresh directory with a short path (a GnuPG home inside it keeps its agent's socket
    path under the system's limit), removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="d"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
