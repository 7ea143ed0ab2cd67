"""A zero-install mail server in the current event loop: pymap for IMAP, aiosmtpd for SMTP.

It is the demo's stand-in for Postfix + Dovecot.  Mailboxes live in memory (pymap's dict
backend); passwords are stored in clear (pysasl ``Cleartext``), which keeps a login at a few
milliseconds instead of ~100 ms of PBKDF2.

    mail = await SandboxMail.start({"list@test.example": "pw"})
    ...  # IMAP on 127.0.0.1:mail.imap_port, SMTP on 127.0.0.1:mail.smtp_port
    await mail.stop()

SMTP takes mail for known users only (anything else gets 550 at RCPT) and appends it to each
recipient's INBOX, so it is never a relay.  AUTH PLAIN/LOGIN is offered, checked against the
same users, but not required.  :meth:`SandboxMail.stop` closes the listeners and also every
open client connection, so a client sitting in IDLE sees the server go away.
"""

from __future__ import annotations

import asyncio
import email.utils
import secrets
import uuid
from argparse import Namespace
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from proxyprotocol.sock import SocketInfo
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import Identity, Login
from pymap.concurrent import Subsystem
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import Cleartext

from . import SandboxError
from .listening import Listeners

__all__ = ["SandboxMail"]

HOSTNAME = "mx.test.example"
STOP_GRACE = 1.0  # seconds open sessions get to end by themselves in stop()


class _Config(DictConfig):
    """pymap's dict-backend config with a fixed greeting.

    The stock greeting calls ``socket.getfqdn()`` for every connection, a blocking and
    possibly slow DNS lookup inside the event loop.
    """

    @property
    def greeting(self) -> bytes:
        return b"Server ready " + HOSTNAME.encode()


def _crlf(data: bytes) -> bytes:
    """Normalise line endings to CRLF, as IMAP and signature checks expect."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class _TrackedSMTP(SMTP):
    """aiosmtpd's protocol, registered with its server so :meth:`SandboxMail.stop` can end it."""

    def __init__(self, owner: SandboxMail, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner
        owner._smtp_protocols.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._owner._listeners.made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._smtp_protocols.discard(self)
        super().connection_lost(error)


class SandboxMail:
    """An in-process IMAP + SMTP server for a fixed set of users; see the module docstring."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.imap_port = 0
        self.smtp_port = 0
        self._passwords: dict[str, str] = {}
        self._config = _Config.from_args(
            Namespace(
                debug=False,
                host=host,
                port="0",
                cert=None,
                key=None,
                tls=False,
                proxy_protocol=None,
                inherited_sockets=None,
                passlib_cfg=None,
                demo_data=False,
                # pymap always knows a demo user; give it a name nobody can guess.  It is never
                # created, because we build Login ourselves instead of DictBackend.init().
                demo_user=secrets.token_hex(16),
                demo_password=secrets.token_hex(16),
            ),
            invalid_user_sleep=0.0,
            hash_context=Cleartext(),
            # The default runs each password check on a thread pool that is never shut down.
            cpu_subsystem=Subsystem.for_asyncio(),
        )
        self._login = Login(self._config)
        self._imap = IMAPServer(self._login, self._config)
        self._listeners = Listeners()
        self._imap_tasks: set[asyncio.Task[Any]] = set()
        self._smtp_protocols: set[_TrackedSMTP] = set()

    @classmethod
    async def start(
        cls,
        users: Mapping[str, str],
        host: str = "127.0.0.1",
        imap_port: int = 0,
        smtp_port: int = 0,
    ) -> SandboxMail:
        """Create ``users`` (address -> password) and listen on ``host``; 0 picks a free port."""
        mail = cls(host)
        for address, password in users.items():
            await mail.add_user(address, password)
        try:
            imap = await mail._listeners.listen_streams(mail._imap_connected, host, imap_port)
            smtp = await mail._listeners.listen(mail._new_smtp, host, smtp_port)
        except OSError as exc:
            await mail.stop()
            raise SandboxError(f"sandbox mail server cannot listen on {host}: {exc}") from exc
        mail.imap_port = imap.sockets[0].getsockname()[1]
        mail.smtp_port = smtp.sockets[0].getsockname()[1]
        return mail

    @property
    def users(self) -> frozenset[str]:
        """The addresses that can log in and receive mail."""
        return frozenset(self._passwords)

    async def add_user(self, address: str, password: str) -> None:
        """Create a user, or set a new password for an existing one."""
        hashed = await Passwords(self._config).hash_password(password)
        metadata = UserMetadata(
            self._config,
            address,
            password=hashed,
            previous_entity_tag=UserMetadata.REPLACE_ANY,
        )
        await Identity(address, self._login, None, frozenset({"admin"})).set(metadata)
        self._passwords[address] = password

    async def deliver(self, rcpt: str, data: bytes) -> None:
        """Append ``data`` (line endings normalised to CRLF) to ``rcpt``'s INBOX as \\Recent."""
        if rcpt not in self._passwords:
            raise SandboxError(f"no such user: {rcpt}")
        message = AppendMessage(_crlf(data), datetime.now(UTC), frozenset())
        async with Identity(rcpt, self._login, None, frozenset()).new_session() as session:
            inbox = await session.mailbox_set.get_mailbox("INBOX")
            await inbox.append(message, recent=True)

    def _lookup(self, address: str) -> str | None:
        """The user for an SMTP address: the local part exactly, the domain in any case."""
        if address in self._passwords:
            return address
        local, _, domain = address.rpartition("@")
        for known in self._passwords:
            known_local, _, known_domain = known.rpartition("@")
            if known_local == local and known_domain.lower() == domain.lower():
                return known
        return None

    async def stop(self) -> None:
        """Stop listening and end every open IMAP and SMTP connection, one still being made
        included (``listening``); idempotent."""
        await self._listeners.close()
        handlers: list[asyncio.Task[Any]] = list(self._imap_tasks)
        for protocol in list(self._smtp_protocols):
            # aiosmtpd keeps the task that runs the session private; it cancels it itself once
            # the transport reports the loss, and we wait for that below.
            task = getattr(protocol, "_handler_coroutine", None)
            if isinstance(task, asyncio.Task):
                handlers.append(task)
        # Closing the sockets lets each session end by itself, which also ends the helper task
        # pymap starts for IDLE; cancelling first would orphan that task.  Cancel stragglers.
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def __aenter__(self) -> SandboxMail:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # IMAP side

    async def _imap_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Called in a task of its own (``Listeners.listen_streams``); we run pymap's
        # connection handler in that same task, so that stop, which ends the connection,
        # can wait for the session to end. (pymap's own service goes through proxyprotocol,
        # which spawns an untracked task.)
        task = asyncio.current_task()
        assert task is not None
        self._imap_tasks.add(task)
        try:
            sock_info = SocketInfo.get(writer, None, unique_id=uuid.uuid4().bytes)
            await self._imap(reader, writer, sock_info)
        finally:
            self._imap_tasks.discard(task)
            writer.close()

    # SMTP side

    def _new_smtp(self) -> _TrackedSMTP:
        return _TrackedSMTP(
            self,
            handler=self,
            hostname=HOSTNAME,
            authenticator=self._authenticate,
            auth_required=False,
            auth_require_tls=False,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user = self._lookup(data.login.decode(errors="replace"))
            expected = self._passwords.get(user or "")
            if expected is not None and secrets.compare_digest(
                expected.encode(), bytes(data.password)
            ):
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        user = self._lookup(address)
        if user is None:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(user)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        queue_id = secrets.token_hex(6).upper()
        # aiosmtpd annotates peer as str, but it holds the socket's (host, port) tuple.
        peer: Any = session.peer
        client_ip = peer[0] if isinstance(peer, tuple) else "unknown"
        for rcpt in envelope.rcpt_tos:
            # What a real MTA adds at final delivery: bounce address, recipient, trace line.
            trace = (
                f"Return-Path: <{envelope.mail_from or ''}>\r\n"
                f"Delivered-To: {rcpt}\r\n"
                f"Received: from {session.host_name or 'unknown'} ([{client_ip}])\r\n"
                f"\tby {HOSTNAME} (secir-bot sandbox) with SMTP id {queue_id}\r\n"
                f"\tfor <{rcpt}>; {email.utils.format_datetime(datetime.now(UTC))}\r\n"
            ).encode()
            await self.deliver(rcpt, trace + content)
        return f"250 2.0.0 Ok: queued as {queue_id}"
