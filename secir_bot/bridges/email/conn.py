"""Connections to the list's mail servers: TLS, the IMAP login, the SMTP session.

Used by the email bridge and by ``secir-bot doctor``, so both connect exactly alike.

TLS is never optional once configured, and certificates are always verified, host name
included. Trust comes from the system's CA store (which OpenSSL also extends with the
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` environment variables), or, when the config names one,
from ``ca_file`` alone.

:func:`diagnose` sorts a failure into what an admin has to fix (a refused login, a
certificate that is not trusted) and what usually passes by itself (the network, a server
restart), so that callers can name the first kind at once and wait out the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aioimaplib
import aiosmtplib

from secir_bot.config import ImapConfig, SmtpConfig

T = TypeVar("T")

IMAP_TIMEOUT = 120.0  # seconds for one IMAP command (a FETCH of a large mail included)
CONNECT_TIMEOUT = 60.0  # seconds for the TCP connection, the TLS handshake and the greeting


class ImapError(Exception):
    """The IMAP server refused a command (translated from aioimaplib responses)."""


class ImapLoginRefused(ImapError):
    """The IMAP server refused the bot's user name or password."""


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that verifies the certificate and the host name.

    Without ``ca_file`` the system store is used (and ``SSL_CERT_FILE``/``SSL_CERT_DIR``);
    with it, only the CAs in that file are trusted.
    """
    return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))


async def ok(pending: Awaitable[aioimaplib.Response], what: str) -> aioimaplib.Response:
    """Await an IMAP command with a deadline and insist on OK.

    aioimaplib leaves some commands (UID MOVE/COPY/STORE) without a timeout and does not
    fail them when the connection drops, so every command gets one here.
    """
    resp = await asyncio.wait_for(pending, IMAP_TIMEOUT)
    if resp.result != "OK":
        raise ImapError(f"IMAP {what} failed: {resp.result} {resp.lines[-1:]!r}")
    return resp


async def close_imap(imap: aioimaplib.IMAP4, logout: bool = True) -> None:
    """Log out if the server still listens (and ``logout``), and close the socket in any
    case (also when this is cancelled: a second stop while the LOGOUT waits)."""
    try:
        # aioimaplib's answer to the greeting (it asks for the CAPABILITY, with no deadline)
        # would wait for ever on a connection lost before the answer came.
        helpers = [task for task in getattr(imap.protocol, "tasks", ()) if not task.done()]
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        transport = getattr(imap.protocol, "transport", None)
        if transport is None or transport.is_closing():
            # Gone already (the server hung up): a LOGOUT would only wait for its timeout.
            return
        if logout:
            with contextlib.suppress(Exception):
                if imap.has_pending_idle():
                    imap.idle_done()
                await asyncio.wait_for(imap.logout(), 5)
    finally:
        transport = getattr(imap.protocol, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.close()


def unanswered(exc: BaseException) -> bool:
    """Whether a set-up ended by ``exc`` left a command unanswered: a server that did not
    answer in time would not answer a LOGOUT either, and a stop (a cancellation) is not held
    up by one, which would wait behind that command for its 5 s."""
    return isinstance(exc, TimeoutError | asyncio.CancelledError)


async def until_lost(pending: asyncio.Future[Any], lost: asyncio.Event) -> None:
    """Wait until ``pending`` is done or the connection is lost; cancel it in the latter case."""
    waiter = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not pending.done():
            pending.cancel()


async def open_imap(
    cfg: ImapConfig,
    password: str,
    conn_lost: Callable[[Exception | None], None] | None = None,
) -> aioimaplib.IMAP4:
    """Connect (TLS as configured), wait for the greeting and log in.

    Raises :class:`ImapLoginRefused` when the server refuses the login, ``OSError`` (TLS
    errors included) or ``TimeoutError`` when it cannot be reached. A connection that drops
    before the login or during it raises ``ConnectionError`` at once: aioimaplib is told of
    the loss but waited for its timeout. A server that greets with anything but OK (``* BYE
    Too many connections``) raises :class:`ImapError` with its words. The TCP connection,
    the TLS handshake and the greeting (aioimaplib's CAPABILITY after it included) end
    after ``CONNECT_TIMEOUT``.
    """
    lost = asyncio.Event()
    why: list[Exception] = []

    def on_lost(exc: Exception | None) -> None:
        why.extend([exc] if exc is not None else [])
        lost.set()
        if conn_lost is not None:
            conn_lost(exc)

    async def unless_lost(pending: Awaitable[T], when: str, deadline: float | None = None) -> T:
        answer = asyncio.ensure_future(pending)
        try:
            async with asyncio.timeout(deadline):
                await until_lost(answer, lost)
        except TimeoutError:
            # No transport yet: the TCP connection or the TLS handshake never completed
            # (a firewall dropping the packets), not a server that answers and is stuck.
            reached = imap.protocol.transport is not None
            what = "greeting from" if reached else "connection to"
            how = "" if reached else " (TCP or TLS handshake)"
            raise TimeoutError(f"no {what} the IMAP server in {deadline:g} s{how}") from None
        if refused:
            raise ImapError(f"the IMAP server refused the session: {refused[0]}")
        if not answer.done() or answer.cancelled():  # cancelled by the loss, or about to be
            raise ConnectionError(f"the IMAP server closed the connection {when}") from (
                why[0] if why else None
            )
        return answer.result()

    # The base class takes both a TLS context and the connection-lost callback; IMAP4_SSL
    # (aioimaplib 2.0) accepts no callback, and only adds a default context.
    imap = aioimaplib.IMAP4(
        host=cfg.host,
        port=cfg.port,
        timeout=CONNECT_TIMEOUT,
        conn_lost_cb=on_lost,
        ssl_context=tls_context(cfg.ca_file) if cfg.security == "tls" else None,
    )
    # aioimaplib reads the greeting in a task of its own and, for anything but OK or PREAUTH
    # (a server's "* BYE Too many connections"), raises there, where nobody hears it, and
    # goes on waiting: the server's words are kept and end the wait instead.
    refused: list[str] = []
    welcome = imap.protocol.welcome

    async def greeted(line: bytes) -> None:
        try:
            await welcome(line)
        except aioimaplib.Error as exc:
            refused.append(str(exc).removeprefix("* ").strip())
            lost.set()

    setattr(imap.protocol, "welcome", greeted)  # noqa: B010  (an instance's bound method)
    try:
        # aioimaplib's own deadline here cannot end the wait when the server greets and
        # leaves its CAPABILITY unanswered (the wait, cancelled, waits for a lock that the
        # unanswered command holds): the bot's deadline does, and close_imap ends the rest.
        await unless_lost(imap.wait_hello_from_server(), "before the login", CONNECT_TIMEOUT)
        resp = await unless_lost(
            asyncio.wait_for(imap.login(cfg.username, password), IMAP_TIMEOUT), "during the login"
        )
        if resp.result != "OK":
            said = bytes(resp.lines[-1]).decode(errors="replace") if resp.lines else ""
            raise login_failure(cfg.username, said)
    except BaseException as exc:
        # A failed set-up must not leave its socket behind; a refusing server is not asked
        # to log out of the session it refused.
        await close_imap(imap, logout=not (unanswered(exc) or refused))
        raise
    return imap


# RFC 5530 response codes that say the server, not the credentials, is the problem (Dovecot
# answers "NO [UNAVAILABLE] Temporary authentication failure" while its auth service is busy
# or restarting): worth a quick retry, and no "fix the password" notice to the admins.
_TEMPORARY_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")


def login_failure(username: str, said: str) -> ImapError:
    """What a refused LOGIN means: bad credentials, or a server that cannot check them now."""
    if said.lstrip().upper().startswith(_TEMPORARY_CODES):
        return ImapError(f"the server could not check the login of {username} now: {said}")
    return ImapLoginRefused(f"the server refused the login of {username}: {said}")


def smtp_client(cfg: SmtpConfig) -> aiosmtplib.SMTP:
    """An SMTP client for the configured server; nothing is sent until ``connect``."""
    return aiosmtplib.SMTP(
        hostname=cfg.host,
        port=cfg.port,
        timeout=cfg.timeout,
        use_tls=cfg.security == "tls",
        start_tls=cfg.security == "starttls",
        tls_context=tls_context(cfg.ca_file) if cfg.security != "plain" else None,
    )


async def open_smtp(cfg: SmtpConfig, password: str | None) -> aiosmtplib.SMTP:
    """Connect, greet (EHLO), upgrade as configured and log in when a user is configured."""
    smtp = smtp_client(cfg)
    try:
        await smtp.connect()
        if cfg.username:
            await smtp.login(cfg.username, password or "")
    except BaseException:
        with contextlib.suppress(Exception):
            smtp.close()
        raise
    return smtp


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong with a mail connection, in words for the admins."""

    kind: Literal["login", "tls", "network"]
    text: str

    @property
    def needs_admin(self) -> bool:
        """A refused login or an untrusted certificate does not pass by waiting."""
        return self.kind != "network"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# Words for a network error raised without any (a TLS handshake cut by a reset, asyncio's
# own timeouts): the admins' notice would otherwise name only the exception's type.
_NETWORK_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionResetError, "the connection was reset by the server or on the way"),
    (ConnectionRefusedError, "the connection was refused (is the server up, the port right?)"),
    (ConnectionAbortedError, "the connection was aborted"),
    (ConnectionError, "the connection was lost"),
    (TimeoutError, "no answer in time"),
    (socket.gaierror, "the server's name could not be resolved"),
)


def diagnose(exc: BaseException) -> Diagnosis:
    """Sort a connection failure (see the module docstring)."""
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Diagnosis(
                "tls", f"the server's TLS certificate is not trusted ({cause.verify_message})"
            )
        if isinstance(cause, ssl.SSLError):
            return Diagnosis("tls", f"the TLS handshake failed ({cause.reason or cause})")
        if isinstance(cause, ImapLoginRefused):
            return Diagnosis("login", str(cause))
        if isinstance(cause, aiosmtplib.SMTPAuthenticationError) and cause.code >= 500:
            # 454 (RFC 4954: temporary authentication failure) is the server's trouble.
            return Diagnosis("login", f"the server refused the login: {cause.code} {cause.message}")
    said = str(exc) or next((words for kind, words in _NETWORK_WORDS if isinstance(exc, kind)), "")
    return Diagnosis("network", f"{type(exc).__name__}: {said}".rstrip(": "))


def certificate_expiry(transport: Any) -> datetime | None:
    """When the peer's certificate on a TLS ``transport`` expires (None without TLS)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert or "notAfter" not in cert:
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)


# -- probes for `secir-bot doctor` ---------------------------------------------------------


@dataclass(frozen=True)
class ImapProbe:
    """What one IMAP login showed: the certificate's end and which folders exist."""

    cert_expires: datetime | None = None
    folders: dict[str, bool] = field(default_factory=dict)
    failure: Diagnosis | None = None


@dataclass(frozen=True)
class SmtpProbe:
    """What one SMTP session (EHLO, STARTTLS as configured, AUTH if configured) showed."""

    cert_expires: datetime | None = None
    logged_in: bool = False
    failure: Diagnosis | None = None


async def probe_imap(cfg: ImapConfig, password: str) -> ImapProbe:
    """Log in, look for the configured folders (nothing is created or changed), log out."""
    try:
        imap = await open_imap(cfg, password)
    except (OSError, TimeoutError, ImapError, aioimaplib.Abort) as exc:
        return ImapProbe(failure=diagnose(exc))
    try:
        expires = certificate_expiry(imap.protocol.transport)
        folders = {}
        for folder in (cfg.mailbox, cfg.processed_folder, cfg.quarantine_folder):
            status = await asyncio.wait_for(imap.status(folder, "(MESSAGES)"), IMAP_TIMEOUT)
            folders[folder] = status.result == "OK"
        return ImapProbe(cert_expires=expires, folders=folders)
    except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
        return ImapProbe(failure=diagnose(exc))
    finally:
        await close_imap(imap)


async def probe_smtp(cfg: SmtpConfig, password: str | None) -> SmtpProbe:
    """Open a session as a delivery would, send no mail, and quit."""
    try:
        smtp = await open_smtp(cfg, password)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return SmtpProbe(failure=diagnose(exc))
    try:
        return SmtpProbe(
            cert_expires=certificate_expiry(smtp.transport), logged_in=bool(cfg.username)
        )
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()
