"""The email bridge: IMAP IDLE in, SMTP out.

Receiving: every message in the list mailbox is fetched, made durable in the inbox, decided,
and only then moved out of the mailbox (to the processed folder, or to quarantine when it
was rejected). A crash anywhere before the move means the message is fetched again on the
next start; the inbox's uniqueness by Message-ID makes that harmless.

IDLE is used when the server offers it (with a timeout, so a silently dead connection is
noticed); otherwise the mailbox is polled. Connection failures reconnect with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import aioimaplib
import aiosmtplib

from secir_bot.bridges.mime import message_id_of
from secir_bot.config import Config
from secir_bot.errors import (
    PermanentDeliveryError,
    TransientDeliveryError,
    raise_if_cancelled,
)
from secir_bot.model import Channel
from secir_bot.relay import Outcome
from secir_bot.store import InboxItem, OutboxRow, Store

log = logging.getLogger(__name__)

IMAP_TIMEOUT = 120.0  # seconds for one IMAP command (a FETCH of a large mail included)


class ImapError(Exception):
    """The IMAP server refused a command (translated from aioimaplib responses)."""


async def _ok(pending: Awaitable[aioimaplib.Response], what: str) -> aioimaplib.Response:
    """Await an IMAP command with a deadline and insist on OK.

    aioimaplib leaves some commands (UID MOVE/COPY/STORE) without a timeout and does not
    fail them when the connection drops, so every command gets one here.
    """
    resp = await asyncio.wait_for(pending, IMAP_TIMEOUT)
    if resp.result != "OK":
        raise ImapError(f"IMAP {what} failed: {resp.result} {resp.lines[-1:]!r}")
    return resp


async def close_imap(imap: aioimaplib.IMAP4) -> None:
    """Log out if the server still listens, and close the socket in any case."""
    with contextlib.suppress(Exception):
        if imap.has_pending_idle():
            imap.idle_done()
        await asyncio.wait_for(imap.logout(), 5)
    transport = getattr(imap.protocol, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()


class EmailBridge:
    channel = Channel.EMAIL

    def __init__(
        self,
        config: Config,
        store: Store,
        process: Callable[[InboxItem], Awaitable[Outcome]],
        on_work: Callable[[], None],
        notify: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.config = config
        self.store = store
        self.process = process
        self.on_work = on_work
        self.notify = notify
        self._told_folders = False
        self.connected = asyncio.Event()
        self._password = config.imap.password.read()

    # -- receiving ---------------------------------------------------------------------

    async def run(self) -> None:
        # Items accepted before a stop but not decided: decide them even if their IMAP copy
        # is gone meanwhile (a copy still there is recognised by its Message-ID later).
        for item in self.store.inbox_pending("email"):
            await self.process(item)
        self.on_work()
        backoff = 1.0
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
                self.connected.clear()
                log.warning(
                    "IMAP connection problem (%s); reconnecting in %.0fs",
                    type(exc).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0

    async def _connect(self, lost: asyncio.Event) -> aioimaplib.IMAP4:
        cfg = self.config.imap

        def conn_lost(exc: Exception | None) -> None:
            lost.set()

        # The base class takes both a TLS context and the connection-lost callback;
        # IMAP4_SSL (aioimaplib 2.0) accepts no callback, and only adds a default context.
        imap = aioimaplib.IMAP4(
            host=cfg.host,
            port=cfg.port,
            timeout=60,
            conn_lost_cb=conn_lost,
            ssl_context=ssl.create_default_context() if cfg.security == "tls" else None,
        )
        try:
            await self._prepare(imap)
        except BaseException:
            await close_imap(imap)  # a failed set-up must not leave its socket behind
            raise
        return imap

    async def _prepare(self, imap: aioimaplib.IMAP4) -> None:
        """Greeting, login, the bot's folders, and the list mailbox selected."""
        cfg = self.config.imap
        await imap.wait_hello_from_server()
        await _ok(imap.login(cfg.username, self._password), "LOGIN")
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
        waiter = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({push, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not push.done():
                push.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await push
        if lost.is_set():
            return
        imap.idle_done()
        await asyncio.wait_for(idle, 30)

    async def _drain(self, imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        """Take every message out of the mailbox, oldest first."""
        resp = await _ok(imap.uid_search("ALL"), "UID SEARCH")
        uids = [u.decode() for line in resp.lines[:1] for u in bytes(line).split() if u.isdigit()]
        for uid in uids:
            if lost.is_set():
                raise ImapError("connection lost")
            raw = await self._fetch(imap, uid)
            if raw is None:
                continue
            item, new = self.store.accept("email", message_id_of(raw), raw, {"imap_uid": uid})
            if not new:
                log.info("mail %s was already in the inbox (item %s)", uid, item.id)
            outcome = await self.process(item)
            self.on_work()
            cfg = self.config.imap
            quarantine = outcome.state in ("rejected", "shunted")
            folder = cfg.quarantine_folder if quarantine else cfg.processed_folder
            await self._move(imap, uid, folder)

    async def _fetch(self, imap: aioimaplib.IMAP4, uid: str) -> bytes | None:
        resp = await _ok(imap.uid("fetch", uid, "(BODY.PEEK[])"), "UID FETCH")
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

    async def deliver(self, row: OutboxRow) -> str:
        cfg = self.config.smtp
        pending = [r for r in row.recipients if r not in row.done]
        if not pending:
            return "nothing left to send"
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            use_tls=cfg.security == "tls",
            start_tls=True if cfg.security == "starttls" else False,
        )
        done = list(row.done)
        refused: list[str] = []
        later: list[str] = []
        try:
            try:
                await smtp.connect()
                if cfg.username:
                    await smtp.login(cfg.username, cfg.password.read())
            except aiosmtplib.SMTPResponseException as exc:
                # A refused greeting or login (say, after a password change) is about the
                # server, not this message: retry, and let the dead-letter deadline speak.
                raise TransientDeliveryError(
                    f"SMTP server refused the session: {exc.code} {exc.message}"
                ) from exc
            for i in range(0, len(pending), cfg.max_recipients):
                batch = pending[i : i + cfg.max_recipients]
                try:
                    errors, _ = await smtp.sendmail(self.config.list.address, batch, row.payload)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    errors = {
                        r.recipient: aiosmtplib.SMTPResponse(r.code, r.message)
                        for r in exc.recipients
                    }
                for addr, resp in errors.items():
                    if resp.code >= 500:
                        refused.append(f"{addr} ({resp.code} {resp.message})")
                    else:
                        later.append(addr)
                done.extend(a for a in batch if a not in later)
                self.store.partly_delivered(row.id, tuple(done))
        except aiosmtplib.SMTPResponseException as exc:
            error = PermanentDeliveryError if exc.code >= 500 else TransientDeliveryError
            raise error(f"SMTP {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await smtp.quit()
        if later:
            # Keep what went through; retry only those the server asked to try later.
            raise TransientDeliveryError("deferred by the server: " + ", ".join(later))
        if refused and len(refused) == len(pending):
            raise PermanentDeliveryError("every recipient was refused: " + ", ".join(refused))
        result = f"sent to {len(done) - len(refused)} recipient(s)"
        if refused:
            result += "; refused: " + ", ".join(refused)
        return result
