"""The composition root: builds everything from the config and runs it.

Every long-lived task (Matrix sync, IMAP receive, the inbox runners, the outbox workers)
runs under one ``asyncio.TaskGroup``: if one fails, the others are cancelled and the process
exits loudly instead of running half-alive. Shutdown closes in reverse order of construction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from secir_bot import fileperms, housekeeping, redact
from secir_bot.bridges import Bridge
from secir_bot.bridges.email import EmailBridge, EmailRenderer
from secir_bot.bridges.matrix import MatrixBridge
from secir_bot.bridges.matrix.render import MatrixRenderer
from secir_bot.casetimer import CaseExpiry
from secir_bot.commands import Context as CommandContext
from secir_bot.commands import StatusSource, registry
from secir_bot.commands.dispatch import Dispatcher
from secir_bot.commands.executor import Executor
from secir_bot.commands.matrix_front import MatrixFront
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.errors import StoreError, StoreMissing
from secir_bot.fanout import Fanout
from secir_bot.health import Health, Link, where_of
from secir_bot.inbox import Decider
from secir_bot.mailfront import MailFront
from secir_bot.model import Channel, InboxState
from secir_bot.notices import Notices
from secir_bot.outbox import Outbox
from secir_bot.runner import InboxRunner
from secir_bot.steps import Services
from secir_bot.store import LIST_FPR_KEY, Store
from secir_bot.whois import WhoisServer

log = logging.getLogger(__name__)


def check_store_dir(config: Config) -> None:
    """The store must exist; whatever of it others could read is made private, loudly."""
    path = config.store_path
    if not path.is_dir():
        raise StoreMissing(f"no store at {path}: run 'secir-bot init' first")
    for change in fileperms.tighten(path):
        log.warning("store: %s", change)


def decider(services: Services) -> Decider:
    """What decides inbox items, with each channel's renderer wired in (the core never
    imports a bridge; this is the one place that hands the renderers over)."""
    cfg, store, keyring = services.config, services.store, services.keyring
    room = MatrixRenderer()
    mail = EmailRenderer(cfg, store, keyring, services.list_fpr)
    notices = Notices(cfg, store, keyring, room, mail)
    return Decider(services, Fanout(cfg, store, keyring, room, mail, notices), notices)


def command_context(services: Services, status: StatusSource | None = None) -> CommandContext:
    """What the command handlers may use, with every command secir-bot has."""
    cfg = services.config
    return CommandContext(
        config=cfg,
        store=services.store,
        keyring=services.keyring,
        list_fpr=services.list_fpr,
        whois=WhoisServer(cfg.whois.host, cfg.whois.port, cfg.whois.timeout),
        registry=registry.default(),
        status=status,
    )


class App:
    """One running list: store, keyring, bridges and outbox."""

    def __init__(self, config: Config) -> None:
        redact.install()  # also when run inside another program, with its own handlers
        check_store_dir(config)
        self.config = config
        self.store = Store.open(config.store_path)
        self.store.defer_syncs()  # commits off the disk's clock; synced where it matters
        self.keyring = Keyring(config.store_path / "gnupg")
        list_fpr = self.store.kv.get(LIST_FPR_KEY)
        if not list_fpr:
            raise StoreMissing("the store has no list key: run 'secir-bot init' first")
        self.services = Services(
            config=config,
            store=self.store,
            keyring=self.keyring,
            list_fpr=list_fpr,
            bot_user_id=config.matrix.user_id,
        )
        self.decider = decider(self.services)
        self.decider.on_queued = self._wake
        # Mail is decided several at a time (each thread and sender in order); Matrix in order.
        parallel = {Channel.EMAIL: config.imap.parallel_decisions}
        self.inbox = {
            channel: InboxRunner(
                self.store, self.decider, channel, self._wake, parallel.get(channel, 1)
            )
            for channel in Channel
        }
        self.health = Health(
            self._notify, config.delivery.outage_notice_after, self._backlog, where_of(config)
        )
        self.matrix = MatrixBridge(
            config,
            self.store,
            config.store_path / "matrix",
            self.inbox[Channel.MATRIX],
            self._wake,
            self._notify,
            self._matrix_link,
        )
        self.email = EmailBridge(
            config, self.store, self.inbox[Channel.EMAIL], self._notify, self.health
        )
        bridges: dict[Channel, Bridge] = {Channel.MATRIX: self.matrix, Channel.EMAIL: self.email}
        self.outbox = Outbox(
            self.store,
            bridges,
            config.delivery,
            self.decider.notices.admins,
            config.matrix.control_room,
        )
        self.decider.room_handed_over = lambda: self.outbox.handed_over(Channel.MATRIX)
        notices = self.decider.notices
        # Commands in the rooms: read once the Matrix side exists (it needs the inbox first).
        self.commands = command_context(self.services, self)
        self.decider.commands = MatrixFront(
            config, self.store, Dispatcher(self.commands), self.matrix.actions, notices.room
        )
        # Commands and the procedure's mail on the request address (and command words).
        self.decider.requests = MailFront(self.services, self.commands, notices.mail, notices)
        self.executor = Executor(
            config,
            self.store,
            self.keyring,
            notices.room,
            notices.mail,
            self.matrix.actions,
            self.outbox.wake,
        )
        self.cases = CaseExpiry(self.commands, self.executor.wake)
        if self.matrix.user_id != config.matrix.user_id:
            raise StoreError("the Matrix login does not match matrix.user_id")

    def _wake(self) -> None:
        # After each decision: its deliveries, and the effects of a command it ran.
        self.outbox.wake()
        self.executor.wake()
        self.cases.wake()  # a command may have opened a case that expires first

    def _notify(self, text: str) -> None:
        self.outbox.notify(text)

    def _matrix_link(self, works: bool, reason: str) -> None:
        if works:
            self.health.up(Link.MATRIX)
        else:
            self.health.down(Link.MATRIX, reason)

    def channels(self) -> dict[str, str]:
        """For ``!status`` (the commands' ``StatusSource``): each link, up or down."""
        return {str(link): "down" if self.health.is_down(link) else "up" for link in Link}

    def _backlog(self) -> str:
        """What waits in the queues, for the admins' outage notices."""
        to_matrix = len(self.store.outbox.pending(Channel.MATRIX))
        by_mail = len(self.store.outbox.pending(Channel.EMAIL))
        waiting = (
            (Channel.EMAIL, InboxState.NEW),
            (Channel.MATRIX, InboxState.NEW),
            (Channel.MATRIX, InboxState.PARKED),
        )
        received = sum(len(self.store.inbox.pending(source, state)) for source, state in waiting)
        return (
            f"{to_matrix} message(s) to Matrix and {by_mail} by mail in the outbox, "
            f"{received} received item(s) not yet processed"
        )

    async def run(self) -> None:
        log.info(
            "secir-bot running for %s (list key %s)",
            self.config.list.address,
            self.services.list_fpr,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                for name, start in self.tasks():
                    tg.create_task(start(), name=name)
        finally:
            await self.close()

    def tasks(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """Every long-lived task of the running list, by name (a new one is a new line)."""
        return [
            *((f"inbox-{channel}", runner.run) for channel, runner in self.inbox.items()),
            ("matrix", self.matrix.run),
            ("email", self.email.run),
            ("outbox", self.outbox.run),
            ("effects", self.executor.run),
            ("case-expiry", self.cases.run),
            ("health", self.health.run),
            ("store-sync", self.store.flush_forever),
            ("housekeeping", lambda: housekeeping.run(self.store, self.config.retention_days)),
        ]

    async def close(self) -> None:
        await self.decider.aclose()  # list mail not yet made stays marked for the next start
        await self.matrix.close()
        await self.email.close()
        await self.decider.fanout.mail.aclose()
        await asyncio.to_thread(self.keyring.close)
        self.store.close()
