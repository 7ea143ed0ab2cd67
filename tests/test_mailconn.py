"""How a refused IMAP login is read: bad credentials, or a server that cannot check them now;
and how long the bot waits for a server that hangs up or never speaks before its greeting.

The servers here are bare TCP peers (they speak no IMAP): the moments a real server goes
away are provoked on the real Dovecot in tests/integration/test_imap_greeting.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from secir_bot.bridges.email import conn
from secir_bot.bridges.email.conn import (
    ImapError,
    ImapLoginRefused,
    diagnose,
    login_failure,
    open_imap,
)
from secir_bot.config import ImapConfig
from secir_bot.config.base import Secret


@pytest.mark.parametrize(
    "said",
    [
        # Dovecot's own words while its auth service is busy or restarting (seen under load).
        "[UNAVAILABLE] Temporary authentication failure. [vm:2026-12-02 21:05:45]",
        "[SERVERBUG] Internal error occurred. Refer to server log for more information.",
        "[INUSE] Mailbox is locked",
    ],
)
def test_a_temporary_refusal_is_not_a_wrong_password(said: str) -> None:
    failure = login_failure("list@nic.test", said)
    assert not isinstance(failure, ImapLoginRefused)
    assert diagnose(failure).kind == "network"


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        # A TLS handshake cut by a reset raises the error with no words at all.
        (ConnectionResetError(), "ConnectionResetError: the connection was reset by the server"),
        (TimeoutError(), "TimeoutError: no answer in time"),
        # The system's own words stay when there are some.
        (ConnectionRefusedError(111, "Connection refused"), "[Errno 111] Connection refused"),
    ],
)
def test_a_network_failure_without_words_is_named_for_the_admins(
    failure: Exception, text: str
) -> None:
    diagnosis = diagnose(failure)
    assert diagnosis.kind == "network"
    assert text in diagnosis.text


@pytest.mark.parametrize(
    "said", ["[AUTHENTICATIONFAILED] Authentication failed.", "Authentication failed."]
)
def test_a_refused_password_is_named_as_such(said: str) -> None:
    failure = login_failure("list@nic.test", said)
    assert isinstance(failure, ImapLoginRefused)
    assert diagnose(failure).kind == "login"


Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def listening(peer: Peer) -> AsyncIterator[int]:
    """A TCP server on a free loopback port that treats each connection with ``peer``."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await peer(reader, writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


def _imap(port: int, security: str = "plain") -> ImapConfig:
    return ImapConfig(
        host="127.0.0.1",
        port=port,
        security=security,
        username="list@nic.test",
        password=Secret(),
        mailbox="INBOX",
        processed_folder="done",
        quarantine_folder="quarantine",
        poll_interval=60.0,
        idle_timeout=300.0,
    )


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()  # an orderly close (FIN), before any greeting


async def _say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client goes


async def test_a_server_that_hangs_up_before_its_greeting_is_noticed_at_once() -> None:
    """aioimaplib is told of the loss but waited for the greeting until CONNECT_TIMEOUT."""
    async with listening(_hang_up) as port:
        async with asyncio.timeout(20):  # well under CONNECT_TIMEOUT (a minute)
            with pytest.raises(ConnectionError, match="before the login") as failed:
                await open_imap(_imap(port), "pw")
    assert diagnose(failed.value).kind == "network"


@pytest.mark.parametrize("kept_open", [False, True], ids=["then-closes", "then-waits"])
async def test_a_server_that_refuses_the_session_at_its_greeting_is_quoted(
    kept_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``* BYE`` instead of ``* OK`` (Dovecot's answer to one connection too many): the
    admins read the server's words at once, and no task's error is left unheard."""

    # What earlier tests left for the collector is theirs: finalised now, and not counted.
    gc.collect()
    caplog.clear()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* BYE Maximum number of connections from user+IP exceeded\r\n")
        await writer.drain()
        if kept_open:
            await reader.read()
        else:
            writer.close()

    async with listening(refuse) as port:
        async with asyncio.timeout(20):  # well under CONNECT_TIMEOUT (a minute)
            with pytest.raises(ImapError, match="refused the session") as failed:
                await open_imap(_imap(port), "pw")
    gc.collect()  # a task whose error nobody retrieved says so when it is collected

    diagnosis = diagnose(failed.value)
    assert diagnosis.kind == "network"
    assert "Maximum number of connections from user+IP exceeded" in diagnosis.text
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.parametrize(
    ("security", "said"),
    [
        ("plain", "no greeting from the IMAP server in 0.5 s"),
        # Not "no greeting": the admins would look for a server that answers and is stuck.
        ("tls", "no connection to the IMAP server in 0.5 s (TCP or TLS handshake)"),
    ],
)
async def test_a_server_that_never_greets_is_given_up_after_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, security: str, said: str
) -> None:
    """Silent after the TCP connection (no greeting, or no answer to the TLS ClientHello):
    the TCP connection, the handshake and the greeting share one deadline, and the
    admins are told which step it ended in."""
    monkeypatch.setattr(conn, "CONNECT_TIMEOUT", 0.5)
    async with listening(_say_nothing) as port:
        with pytest.raises(TimeoutError) as failed:
            await open_imap(_imap(port, security), "pw")
    assert said in diagnose(failed.value).text


@pytest.mark.parametrize("answered", [(), (b"CAPABILITY",)], ids=["greeting", "login"])
async def test_a_stop_during_the_set_up_is_not_held_up_by_a_logout(
    answered: tuple[bytes, ...],
) -> None:
    """The bot stopped while the server leaves aioimaplib's CAPABILITY (after the greeting)
    or the LOGIN unanswered: a LOGOUT would wait behind that command for its 5 s."""
    asked: asyncio.Queue[bytes] = asyncio.Queue()

    async def greets_then_hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        while line := await reader.readline():
            tag, command = line.split()[:2]
            if command in answered:
                writer.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
            else:
                await asked.put(command)

    async with listening(greets_then_hangs) as port:
        setting_up = asyncio.create_task(open_imap(_imap(port), "pw"))
        assert await asked.get() == (b"LOGIN" if answered else b"CAPABILITY")
        setting_up.cancel()
        try:
            # A LOGOUT's wait is 5 s; closing the socket takes none.
            done, _ = await asyncio.wait({setting_up}, timeout=4)
            assert done, "the stopped set-up still waits (for a LOGOUT)"
            assert setting_up.cancelled()  # the stop stays a stop
        finally:
            await asyncio.gather(setting_up, return_exceptions=True)


async def test_a_close_cancelled_while_the_server_ignores_the_logout_still_closes_the_socket() -> (
    None
):
    """A second stop (SIGTERM twice) while close_imap waits for the LOGOUT's answer: the
    socket is closed all the same, not left open until the process ends."""
    asked: asyncio.Queue[bytes] = asyncio.Queue()

    async def ignores_the_logout(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"* OK ready\r\n")
        while line := await reader.readline():
            tag, command = line.split()[:2]
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1\r\n")
            if command in (b"CAPABILITY", b"LOGIN"):
                writer.write(tag + b" OK done\r\n")
            else:
                await asked.put(command)

    async with listening(ignores_the_logout) as port:
        imap = await open_imap(_imap(port), "pw")
        closing = asyncio.create_task(conn.close_imap(imap))
        assert await asked.get() == b"LOGOUT"
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert imap.protocol.transport.is_closing()
