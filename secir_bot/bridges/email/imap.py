"""Receiving mail: IMAP IDLE on the list mailbox, every message made durable, then moved.

Every message in the list mailbox is fetched and made durable in the inbox; the inbox runner
is woken to decide it; only once its item is decided is the message moved out of the
mailbox (to the processed folder, or to quarantine when it was rejected). All of a drain's
messages are stored before the first decision is waited for, so a slow decision holds up
the moves, never the intake. A crash anywhere before the move means the message is fetched
again on the next start; the inbox's uniqueness by Message-ID and bytes makes that harmless.

IDLE is used when the server offers it (with a timeout, so a silently dead connection is
noticed); otherwise the mailbox is polled. Connection failures reconnect with backoff, which
starts again from one second after every session that got going. Connecting, TLS and the
login live in ``conn``; what each failure means for the admins is told through ``health``
(a refused login or an untrusted certificate at once, an outage when it lasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aioimaplib

from secir_bot.bridges import Intake
from secir_bot.bridges.email.conn import (
    IMAP_TIMEOUT,
    ImapError,
    close_imap,
    diagnose,
    open_imap,
    unanswered,
    until_lost,
)
from secir_bot.bridges.email.conn import ok as _ok
from secir_bot.config import Config
from secir_bot.health import Health, Link
from secir_bot.mime import message_id_of
from secir_bot.model import Channel, InboxState, MailFacts
from secir_bot.store import Store
from secir_bot.tasks import raise_if_cancelled

# The email bridge's one logger name, as it was before the bridge became a package (log
# filters and the admins' grep know it).
log = logging.getLogger("secir_bot.bridges.email")
T = TypeVar("T")

_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_EXISTS = re.compile(rb"\* (\d+) EXISTS")
MAX_SEARCHES_IN_VAIN = 3  # a new message shows in the search right after it was told of
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


class Arrivals:
    """Notes the last "* n EXISTS" (the mailbox's size) the server sends on one connection.

    The server tells of a new message once, at the end of whatever command comes next, and
    a SEARCH sees only what was told before it began. aioimaplib (2.0) hands an untagged
    response to a waiting NOOP or IDLE or to the command it names, and otherwise logs and
    drops it: "* 1 EXISTS" at the end of a UID SEARCH or FETCH was lost, the IDLE after it had
    nothing new to push, and the mail waited for the next push or ``idle_timeout``. The
    protocol's handler of untagged responses is the one place that sees them all.
    """

    def __init__(self, imap: aioimaplib.IMAP4) -> None:
        self.exists: int | None = None  # the last size told, since the caller cleared it
        protocol = imap.protocol
        handle = protocol._untagged_response

        def watch(line: bytes) -> Any:
            told = _EXISTS.fullmatch(line)
            if told:
                self.exists = int(told.group(1))
            return handle(line)

        protocol._untagged_response = watch


class ImapReceiver:
    """The list mailbox's side of the email bridge."""

    def __init__(
        self,
        config: Config,
        store: Store,
        intake: Intake,
        notify: Callable[[str], None],
        health: Health,
    ) -> None:
        self.config = config
        self.store = store
        self.intake = intake
        self.notify = notify
        self.health = health
        self._told_folders = False
        self.connected = asyncio.Event()
        self._lost = asyncio.Event()  # the current session's: set when its connection drops

    async def run(self) -> None:
        # Items accepted before a stop but not decided are decided by the inbox runner, even
        # if their IMAP copy is gone meanwhile (a copy still there is recognised later).
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

    async def _connect(self, lost: asyncio.Event) -> tuple[aioimaplib.IMAP4, Arrivals]:
        self._lost = lost

        def conn_lost(exc: Exception | None) -> None:
            lost.set()

        # Read at every attempt, so that a corrected password file is used without a restart.
        password = await asyncio.to_thread(self.config.imap.password.read)
        imap = await open_imap(self.config.imap, password, conn_lost)
        arrivals = Arrivals(imap)
        try:
            await self._prepare(imap)
        except BaseException as exc:
            # A failed set-up must not leave its socket behind (the CREATE, the STATUS or the
            # SELECT unanswered: no LOGOUT).
            await close_imap(imap, logout=not unanswered(exc))
            raise
        return imap, arrivals

    async def _prepare(self, imap: aioimaplib.IMAP4) -> None:
        """The bot's folders, and the list mailbox selected (after the login)."""
        cfg = self.config.imap
        for folder in (cfg.processed_folder, cfg.quarantine_folder):
            # Fails harmlessly when the folder exists.
            await self._unless_lost(asyncio.wait_for(imap.create(folder), IMAP_TIMEOUT))
            status = await self._unless_lost(
                asyncio.wait_for(imap.status(folder, "(MESSAGES)"), IMAP_TIMEOUT)
            )
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
        await self._ok(imap.select(cfg.mailbox), "SELECT")

    async def _session(self) -> None:
        lost = asyncio.Event()
        imap, arrivals = await self._connect(lost)
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
                await self._drain(imap, lost, arrivals)
                if imap.has_capability("IDLE"):
                    await self._idle(imap, lost)
                else:
                    await asyncio.sleep(self.config.imap.poll_interval)
            raise ImapError("connection lost")
        finally:
            await close_imap(imap)

    async def _idle(self, imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        # aioimaplib waits for the server's "+ idling" without a deadline and is not told
        # of a lost connection: a server gone at that moment left the bot connected in name.
        starting = imap.idle_start(timeout=self.config.imap.idle_timeout)
        idle = await self._unless_lost(asyncio.wait_for(starting, IMAP_TIMEOUT))
        push = asyncio.ensure_future(imap.wait_server_push(timeout=self.config.imap.idle_timeout))
        await until_lost(push, lost)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await push
        if lost.is_set():
            return
        imap.idle_done()
        # The push may have been the server's BYE: then the end of IDLE never comes, and
        # aioimaplib does not fail the command when the connection drops.
        await asyncio.wait_for(until_lost(idle, lost), 30)

    async def _drain(self, imap: aioimaplib.IMAP4, lost: asyncio.Event, arrivals: Arrivals) -> None:
        """Take every message out of the mailbox, oldest first, until none is left.

        A message that lands meanwhile (while another is decided, or just before a search)
        is taken too: the mailbox is searched again after each round, and once more when
        the server told of more messages during a search than that search saw. The IDLE
        that follows is told of anything newer, so nothing waits for ``idle_timeout``.
        """
        taken: set[str] = set()
        told_in_vain = 0  # searches in a row that found nothing the server said was there
        while True:
            if lost.is_set():
                raise ImapError("connection lost")
            arrivals.exists = None
            resp = await self._ok(imap.uid_search("ALL"), "UID SEARCH")
            found = [u.decode() for line in resp.lines[:1] for u in bytes(line).split()]
            found = [u for u in found if u.isdigit()]
            uids = [u for u in found if u not in taken]
            if uids:
                told_in_vain = 0
                taken.update(uids)
                await self._take(imap, lost, uids)
            elif arrivals.exists is None or arrivals.exists <= len(found):
                return
            elif (told_in_vain := told_in_vain + 1) > MAX_SEARCHES_IN_VAIN:
                # A server whose count never matches its search: not worth a busy loop.
                log.debug("IMAP: %d messages said to exist, %d found", arrivals.exists, len(found))
                return

    async def _take(self, imap: aioimaplib.IMAP4, lost: asyncio.Event, uids: list[str]) -> None:
        """Store these messages, then move each out of the mailbox once it is decided.

        Nothing here may fail on a message's content: it is stored as it came (raw), and
        any judgement of it is left to the pipeline, which can refuse it with a reason. A
        message larger than ``list.max_message_bytes`` is not fetched at all: its header
        alone is stored, for the pipeline to refuse it and the admins to see who sent it.
        """
        limit = self.config.list.max_message_bytes
        accepted: list[tuple[str, int]] = []  # (IMAP uid, inbox item), to move once decided
        for uid in uids:
            if lost.is_set():
                raise ImapError("connection lost")
            size = await self._size(imap, uid)
            if size is None:
                continue  # expunged meanwhile
            facts = MailFacts(imap_uid=uid, size=size, headers_only=size > limit)
            if facts.headers_only:
                raw = await self._fetch(imap, uid, "BODY.PEEK[HEADER]")
            else:
                raw = await self._fetch(imap, uid)
            if raw is None:
                continue
            key = await asyncio.to_thread(message_id_of, raw)
            item, new = self.store.inbox.accept(Channel.EMAIL, key, raw, facts.to_meta())
            if not new:
                log.info("mail %s was already in the inbox (item %s)", uid, item.id)
            accepted.append((uid, item.id))
            self.intake.wake()
        cfg = self.config.imap
        for uid, item_id in accepted:
            # Out of INBOX only once decided: a crash before leaves it to be fetched again.
            outcome = await self.intake.decided(item_id)
            if lost.is_set():
                raise ImapError("connection lost")
            quarantine = outcome.state in (InboxState.REJECTED, InboxState.SHUNTED)
            folder = cfg.quarantine_folder if quarantine else cfg.processed_folder
            await self.store.durable()  # the mail and its decision on the disk first
            await self._move(imap, uid, folder)

    async def _ok(self, pending: Awaitable[aioimaplib.Response], what: str) -> aioimaplib.Response:
        """``conn.ok``, given up as soon as the connection drops."""
        return await self._unless_lost(_ok(pending, what))

    async def _unless_lost(self, pending: Awaitable[T]) -> T:
        """``pending``, given up as soon as the session's connection drops: aioimaplib leaves
        a command whose connection dropped pending, which cost its timeout (a kick or a BYE
        during a SEARCH or FETCH, or while the folders are made after the login)."""
        answer = asyncio.ensure_future(pending)
        await until_lost(answer, self._lost)
        if not answer.done() or answer.cancelled():  # cancelled by the loss, or about to be
            raise ImapError("connection lost")
        return answer.result()

    async def _size(self, imap: aioimaplib.IMAP4, uid: str) -> int | None:
        """RFC822.SIZE of a message, asked before its body is fetched (None: gone)."""
        resp = await self._ok(imap.uid("fetch", uid, "(RFC822.SIZE)"), "UID FETCH SIZE")
        for line in resp.lines:
            found = _SIZE.search(bytes(line))
            if found:
                return int(found.group(1))
        return None

    async def _fetch(
        self, imap: aioimaplib.IMAP4, uid: str, part: str = "BODY.PEEK[]"
    ) -> bytes | None:
        resp = await self._ok(imap.uid("fetch", uid, f"({part})"), "UID FETCH")
        for line in resp.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None  # expunged meanwhile

    async def _move(self, imap: aioimaplib.IMAP4, uid: str, folder: str) -> None:
        if imap.has_capability("MOVE"):
            await self._ok(imap.uid("move", uid, folder), "UID MOVE")
            return
        await self._ok(imap.uid("copy", uid, folder), "UID COPY")
        await self._ok(imap.uid("store", uid, "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
        if imap.has_capability("UIDPLUS"):
            await self._ok(imap.uid("expunge", uid), "UID EXPUNGE")
        else:
            await self._ok(imap.expunge(), "EXPUNGE")
