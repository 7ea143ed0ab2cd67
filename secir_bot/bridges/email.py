"""The email bridge: IMAP IDLE in, SMTP out.

Receiving: every message in the list mailbox is fetched, made durable in the inbox, decided,
and only then moved out of the mailbox (to the processed folder, or to quarantine when it
was rejected). A crash anywhere before the move means the message is fetched again on the
next start; the inbox's uniqueness by Message-ID and bytes makes that harmless.

IDLE is used when the server offers it (with a timeout, so a silently dead connection is
noticed); otherwise the mailbox is polled. Connection failures reconnect with backoff, which
starts again from one second after every session that got going. Connecting, TLS and the
login live in ``mailconn``; what each failure means for the admins is told through
``health`` (a refused login or an untrusted certificate at once, an outage when it lasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aioimaplib
import aiosmtplib

from secir_bot.bridges import smtpsend
from secir_bot.bridges.mailconn import (
    IMAP_TIMEOUT,
    ImapError,
    close_imap,
    diagnose,
    open_imap,
    open_smtp,
)
from secir_bot.bridges.mailconn import ok as _ok
from secir_bot.bridges.mime import message_id_of
from secir_bot.config import Config
from secir_bot.errors import (
    PermanentDeliveryError,
    TransientDeliveryError,
    raise_if_cancelled,
)
from secir_bot.health import Health, Link, where_of
from secir_bot.model import Channel
from secir_bot.relay import Outcome
from secir_bot.store import InboxItem, OutboxRow, Store

__all__ = ["EmailBridge", "ImapError", "close_imap"]

log = logging.getLogger(__name__)

_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
RECONNECT_FIRST = 1.0  # seconds before the first reconnect after a session broke
RECONNECT_MAX = 60.0  # the longest wait between attempts while the network is the problem
# A refused login or an untrusted certificate needs an admin; retrying every minute would only
# look like password guessing to the server (and may get the bot's address blocked).
RECONNECT_MAX_FAULT = 300.0

IMAP_FIXES = {
    "login": "No mail is being read. Fix imap.username or the IMAP password "
    "(imap.password_file or imap.password_env); the bot keeps retrying and picks up a "
    "corrected password file by itself.",
    "tls": "No mail is being read. The bot never skips certificate checks; fix the trust "
    "(imap.ca_file, the system's CA store or SSL_CERT_FILE) or the server's certificate.",
}
SMTP_FIXES = {
    "login": "No list mail is being sent; it waits in the outbox. Fix smtp.username or the "
    "SMTP password (smtp.password_file or smtp.password_env).",
    "tls": "No list mail is being sent; it waits in the outbox. The bot never skips "
    "certificate checks; fix the trust (smtp.ca_file, the system's CA store or "
    "SSL_CERT_FILE) or the server's certificate.",
}


async def _until_lost(pending: asyncio.Future[Any], lost: asyncio.Event) -> None:
    """Wait until ``pending`` is done or the connection is lost; cancel it in the latter case."""
    waiter = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not pending.done():
            pending.cancel()


class EmailBridge:
    channel = Channel.EMAIL

    def __init__(
        self,
        config: Config,
        store: Store,
        process: Callable[[InboxItem], Awaitable[Outcome]],
        on_work: Callable[[], None],
        notify: Callable[[str], None] = lambda text: None,
        health: Health | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.process = process
        self.on_work = on_work
        self.notify = notify
        self.health = health or Health(
            notify, config.delivery.outage_notice_after, lambda: "", where_of(config)
        )
        self._told_folders = False
        self.connected = asyncio.Event()

    # -- receiving ---------------------------------------------------------------------

    async def run(self) -> None:
        # Items accepted before a stop but not decided: decide them even if their IMAP copy
        # is gone meanwhile (a copy still there is recognised by its Message-ID later).
        for item in self.store.inbox_pending("email"):
            await self.process(item)
        self.on_work()
        backoff = RECONNECT_FIRST
        while True:
            raise_if_cancelled()
            try:
                await self._session()
            except (
                OSError,
                TimeoutError,
                ImapError,
                aioimaplib.Abort,
                aioimaplib.CommandTimeout,
            ) as exc:
                if self.connected.is_set():
                    # This session got going, so the failure is new: start the backoff over.
                    backoff = RECONNECT_FIRST
                    self.connected.clear()
                problem = diagnose(exc)
                if problem.needs_admin:
                    self.health.fault(Link.IMAP, problem.text, IMAP_FIXES[problem.kind])
                else:
                    self.health.down(Link.IMAP, problem.text)
                log.warning("IMAP: %s; reconnecting in %.0fs", problem.text, backoff)
                await asyncio.sleep(backoff)
                limit = RECONNECT_MAX_FAULT if problem.needs_admin else RECONNECT_MAX
                backoff = min(backoff * 2, limit)

    async def _connect(self, lost: asyncio.Event) -> aioimaplib.IMAP4:
        def conn_lost(exc: Exception | None) -> None:
            lost.set()

        # Read at every attempt, so that a corrected password file is used without a restart.
        password = await asyncio.to_thread(self.config.imap.password.read)
        imap = await open_imap(self.config.imap, password, conn_lost)
        try:
            await self._prepare(imap)
        except BaseException:
            await close_imap(imap)  # a failed set-up must not leave its socket behind
            raise
        return imap

    async def _prepare(self, imap: aioimaplib.IMAP4) -> None:
        """The bot's folders, and the list mailbox selected (after the login)."""
        cfg = self.config.imap
        for folder in (cfg.processed_folder, cfg.quarantine_folder):
            # Fails harmlessly when the folder exists.
            await asyncio.wait_for(imap.create(folder), IMAP_TIMEOUT)
            status = await asyncio.wait_for(imap.status(folder, "(MESSAGES)"), IMAP_TIMEOUT)
            if status.result != "OK":
                # Without its folders the bot cannot acknowledge mail: say so, loudly, once.
                if not self._told_folders:
                    self._told_folders = True
                    self.notify(
                        f"The IMAP folder {folder!r} does not exist and cannot be created, "
                        "so no mail is being processed. Fix imap.processed_folder / "
                        "imap.quarantine_folder (some servers need a prefix such as "
                        "'INBOX.') and restart the bot."
                    )
                raise ImapError(f"IMAP folder {folder!r} is missing and cannot be created")
        await _ok(imap.select(cfg.mailbox), "SELECT")

    async def _session(self) -> None:
        lost = asyncio.Event()
        imap = await self._connect(lost)
        self.connected.set()
        self.health.up(Link.IMAP)
        log.info(
            "IMAP connected to %s:%s as %s",
            self.config.imap.host,
            self.config.imap.port,
            self.config.imap.username,
        )
        try:
            while not lost.is_set():
                raise_if_cancelled()
                await self._drain(imap, lost)
                if imap.has_capability("IDLE"):
                    await self._idle(imap, lost)
                else:
                    await asyncio.sleep(self.config.imap.poll_interval)
            raise ImapError("connection lost")
        finally:
            await close_imap(imap)

    async def _idle(self, imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        idle = await imap.idle_start(timeout=self.config.imap.idle_timeout)
        push = asyncio.ensure_future(imap.wait_server_push(timeout=self.config.imap.idle_timeout))
        await _until_lost(push, lost)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await push
        if lost.is_set():
            return
        imap.idle_done()
        # The push may have been the server's BYE: then the end of IDLE never comes, and
        # aioimaplib does not fail the command when the connection drops.
        await asyncio.wait_for(_until_lost(idle, lost), 30)

    async def _drain(self, imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        """Take every message out of the mailbox, oldest first.

        Nothing here may fail on a message's content: it is stored as it came (raw), and
        any judgement of it is left to the pipeline, which can refuse it with a reason. A
        message larger than ``list.max_message_bytes`` is not fetched at all: its header
        alone is stored, for the pipeline to refuse it and the admins to see who sent it.
        """
        resp = await _ok(imap.uid_search("ALL"), "UID SEARCH")
        uids = [u.decode() for line in resp.lines[:1] for u in bytes(line).split() if u.isdigit()]
        limit = self.config.list.max_message_bytes
        for uid in uids:
            if lost.is_set():
                raise ImapError("connection lost")
            size = await self._size(imap, uid)
            if size is None:
                continue  # expunged meanwhile
            meta: dict[str, object] = {"imap_uid": uid, "size": size}
            if size > limit:
                raw = await self._fetch(imap, uid, "BODY.PEEK[HEADER]")
                meta["headers_only"] = True
            else:
                raw = await self._fetch(imap, uid)
            if raw is None:
                continue
            key = await asyncio.to_thread(message_id_of, raw)
            item, new = self.store.accept("email", key, raw, meta)
            if not new:
                log.info("mail %s was already in the inbox (item %s)", uid, item.id)
            outcome = await self.process(item)
            self.on_work()
            cfg = self.config.imap
            quarantine = outcome.state in ("rejected", "shunted")
            folder = cfg.quarantine_folder if quarantine else cfg.processed_folder
            await self._move(imap, uid, folder)

    async def _size(self, imap: aioimaplib.IMAP4, uid: str) -> int | None:
        """RFC822.SIZE of a message, asked before its body is fetched (None: gone)."""
        resp = await _ok(imap.uid("fetch", uid, "(RFC822.SIZE)"), "UID FETCH SIZE")
        for line in resp.lines:
            found = _SIZE.search(bytes(line))
            if found:
                return int(found.group(1))
        return None

    async def _fetch(
        self, imap: aioimaplib.IMAP4, uid: str, part: str = "BODY.PEEK[]"
    ) -> bytes | None:
        resp = await _ok(imap.uid("fetch", uid, f"({part})"), "UID FETCH")
        for line in resp.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None  # expunged meanwhile

    async def _move(self, imap: aioimaplib.IMAP4, uid: str, folder: str) -> None:
        if imap.has_capability("MOVE"):
            await _ok(imap.uid("move", uid, folder), "UID MOVE")
            return
        await _ok(imap.uid("copy", uid, folder), "UID COPY")
        await _ok(imap.uid("store", uid, "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
        if imap.has_capability("UIDPLUS"):
            await _ok(imap.uid("expunge", uid), "UID EXPUNGE")
        else:
            await _ok(imap.expunge(), "EXPUNGE")

    # -- sending -----------------------------------------------------------------------

    async def _smtp_session(self) -> aiosmtplib.SMTP:
        """A logged-in SMTP session; a failure is told to ``health`` and retried later.

        A refused greeting or login (say, after a password change) is about the server, not
        the message: the delivery is retried, and the dead-letter deadline still applies.
        """
        cfg = self.config.smtp
        try:
            password = await asyncio.to_thread(cfg.password.read) if cfg.username else None
            smtp = await open_smtp(cfg, password)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            problem = diagnose(exc)
            if problem.needs_admin:
                self.health.fault(Link.SMTP, problem.text, SMTP_FIXES[problem.kind])
            else:
                self.health.down(Link.SMTP, problem.text)
            raise TransientDeliveryError(f"SMTP session: {problem.text}") from exc
        self.health.up(Link.SMTP)
        return smtp

    async def deliver(self, row: OutboxRow) -> str:
        cfg = self.config.smtp
        pending = [r for r in row.recipients if r not in row.done]
        if not pending:
            return "nothing left to send"
        done = list(row.done)
        refused: list[str] = []
        later: list[str] = []

        def batch_done(batch: Sequence[str], errors: Mapping[str, aiosmtplib.SMTPResponse]) -> None:
            for addr, resp in errors.items():
                if resp.code >= 500:
                    refused.append(f"{addr} ({resp.code} {resp.message})")
                else:
                    later.append(addr)
            done.extend(a for a in batch if a not in later)
            self.store.partly_delivered(row.id, tuple(done))

        try:
            # One connection (or smtp.connections) for every batch, RCPTs pipelined.
            await smtpsend.send(
                self._smtp_session,
                self.config.list.address,
                pending,
                row.payload,
                batch_done,
                max_recipients=cfg.max_recipients,
                connections=cfg.connections,
                pipelining=cfg.pipelining,
                reply_timeout=cfg.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = PermanentDeliveryError if exc.code >= 500 else TransientDeliveryError
            raise error(f"SMTP {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from exc
        if later:
            # Keep what went through; retry only those the server asked to try later.
            raise TransientDeliveryError("deferred by the server: " + ", ".join(later))
        if refused and len(refused) == len(pending):
            raise PermanentDeliveryError("every recipient was refused: " + ", ".join(refused))
        result = f"sent to {len(done) - len(refused)} recipient(s)"
        if refused:
            result += "; refused: " + ", ".join(refused)
        return result
