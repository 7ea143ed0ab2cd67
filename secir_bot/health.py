"""What the admins hear about the bot's links to the outside: IMAP, SMTP and Matrix.

Each link reports to :class:`Health` when it works (``up``) and when it fails. A failure an
admin has to fix (a refused login, a TLS certificate that is not trusted) is a *fault*: it is
told at once, once, until the link works again. Any other failure starts an *outage*, told
when it has lasted ``delivery.outage_notice_after`` seconds; its end is told too, with what is
waiting in the bot's queues. Every change is logged as well.

The control room is itself on Matrix, so nothing said about a Matrix outage can arrive while
it lasts: a Matrix outage is told once, when it is over, as "Matrix was unreachable from …
to …" (queued in the outbox like every notice), and logged when it passes the threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from secir_bot.config import Config
from secir_bot.tasks import raise_if_cancelled, sleep_until

log = logging.getLogger(__name__)


class Link(StrEnum):
    IMAP = "IMAP"
    SMTP = "SMTP"
    MATRIX = "Matrix"


@dataclass
class _State:
    down_since: float | None = None
    reason: str = ""
    outage_told: bool = False
    fault: str | None = None  # the fault told to the admins, if any


def where_of(config: Config) -> dict[Link, str]:
    """How each link is named in notices: the server it talks to."""
    return {
        Link.IMAP: f"{config.imap.host}:{config.imap.port}",
        Link.SMTP: f"{config.smtp.host}:{config.smtp.port}",
        Link.MATRIX: config.matrix.homeserver,
    }


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Health:
    """Tracks each link's state and tells the admins (see the module docstring)."""

    def __init__(
        self,
        notify: Callable[[str], None],
        outage_after: float,
        backlog: Callable[[], str],
        where: dict[Link, str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._notify = notify
        self._outage_after = outage_after
        self._backlog = backlog
        self._where = where  # "imap.example:993", for the notices
        self._clock = clock
        self._states = {link: _State() for link in Link}
        self._changed = asyncio.Event()

    def is_down(self, link: Link) -> bool:
        return self._states[link].down_since is not None

    def up(self, link: Link) -> None:
        """``link`` works (a login succeeded, a sync or a delivery went through)."""
        state = self._states[link]
        if state.down_since is None:
            return
        now = self._clock()
        lasted = now - state.down_since
        log.info("%s works again after %s", link, _duration(lasted))
        if link is Link.MATRIX and lasted >= self._outage_after:
            self._notify(
                f"Matrix ({self._where[link]}) was unreachable from {_clock(state.down_since)} "
                f"to {_clock(now)} ({_duration(lasted)}): {state.reason}. This notice waited "
                f"in the outbox until Matrix was back. Waiting now: {self._backlog()}."
            )
        elif state.fault is not None or state.outage_told:
            self._notify(
                f"{link} ({self._where[link]}) works again, after {_duration(lasted)} "
                f"(since {_clock(state.down_since)}). Waiting now: {self._backlog()}."
            )
        self._states[link] = _State()
        self._changed.set()

    def down(self, link: Link, reason: str) -> None:
        """``link`` failed for a reason that may pass by itself (network, server restart)."""
        state = self._states[link]
        if state.down_since is None:
            state.down_since = self._clock()
            self._changed.set()
        state.reason = reason

    def fault(self, link: Link, problem: str, fix: str) -> None:
        """``link`` failed for a reason an admin must fix: tell them now, once."""
        problem = problem.rstrip(". ")
        self.down(link, problem)
        state = self._states[link]
        log.error("%s (%s): %s. %s", link, self._where[link], problem, fix)
        if state.fault == problem:
            return
        state.fault = problem
        self._notify(f"{link} ({self._where[link]}): {problem}. {fix}")

    def _due(self) -> tuple[Link, float] | None:
        """The next outage that will need telling, and when."""
        pending = [
            (link, state.down_since + self._outage_after)
            for link, state in self._states.items()
            if state.down_since is not None and not state.outage_told and state.fault is None
        ]
        return min(pending, key=lambda p: p[1]) if pending else None

    async def run(self) -> None:
        """Tell each outage when it has lasted long enough (a task of the App)."""
        while True:
            raise_if_cancelled()
            self._changed.clear()
            due = self._due()
            now = self._clock()
            if due is not None and due[1] <= now:
                self._tell_outage(due[0], now)
                continue
            await sleep_until(self._changed, None if due is None else due[1], now)

    def _tell_outage(self, link: Link, now: float) -> None:
        state = self._states[link]
        assert state.down_since is not None
        state.outage_told = True
        since, lasted = _clock(state.down_since), _duration(now - state.down_since)
        log.error("%s (%s) unreachable since %s: %s", link, self._where[link], since, state.reason)
        if link is Link.MATRIX:
            return  # told when it is back (see the module docstring)
        consequence = {
            Link.IMAP: "mail to the list waits on the mail server",
            Link.SMTP: "list mail waits in the outbox",
        }[link]
        self._notify(
            f"{link} ({self._where[link]}) has been unreachable since {since} ({lasted}): "
            f"{state.reason}. The bot keeps trying; {consequence}. "
            f"Waiting now: {self._backlog()}."
        )
