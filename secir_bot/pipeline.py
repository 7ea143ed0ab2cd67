"""The pipeline: ordered tuples of small steps, and the runner that logs each decision.

A step looks at one received item and returns a ``Decision``: go on, drop it quietly,
or reject it with a reason (the sender and the admins are told).
Exceptions mean that something broke, never that the input was bad. The order of the
steps is data and lives in ``EMAIL_STEPS`` / ``MATRIX_STEPS`` below, in one place.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from secir_bot.bridges.mime import Content, Envelope
from secir_bot.config import Config
from secir_bot.crypto import Decrypted, Keyring
from secir_bot.model import Member
from secir_bot.store import InboxItem, Store

log = logging.getLogger(__name__)


class Verdict(enum.StrEnum):
    CONTINUE = "continue"
    DROP = "drop"  # quietly: loops, duplicates, auto-replies
    REJECT = "reject"  # the sender (if a member) and the admins are told why


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""


CONTINUE = Decision(Verdict.CONTINUE)


def drop(reason: str) -> Decision:
    return Decision(Verdict.DROP, reason)


def reject(reason: str) -> Decision:
    return Decision(Verdict.REJECT, reason)


@dataclass
class Services:
    """What steps may use; built once by the app."""

    config: Config
    store: Store
    keyring: Keyring
    list_fpr: str
    bot_user_id: str


@dataclass
class MailItem:
    """Working state for one received mail as it moves through the steps."""

    item: InboxItem
    envelope: Envelope | None = None
    decrypted: Decrypted | None = None
    content: Content | None = None
    signer: Member | None = None  # the member whose key made a valid signature
    claimed: Member | None = None  # the member the From address names, if any
    signature: str | None = None  # id of the member's signature, recorded when relayed
    notes: list[str] = field(default_factory=list)  # shown with the post (see threads.py)


@dataclass
class MatrixItem:
    """Working state for one Matrix event."""

    item: InboxItem
    event: dict[str, Any] = field(default_factory=dict)
    room_id: str = ""
    sender: Member | None = None


Ctx = TypeVar("Ctx", MailItem, MatrixItem)
Step = Callable[[Ctx, Services], Awaitable[Decision]]


@dataclass(frozen=True)
class Stage(Generic[Ctx]):
    name: str
    steps: Sequence[Step[Ctx]]

    async def run(self, ctx: Ctx, services: Services) -> Decision:
        for step in self.steps:
            decision = await step(ctx, services)
            if decision.verdict is not Verdict.CONTINUE:
                log.info(
                    "%s item %s: %s by %s (%s)",
                    self.name,
                    ctx.item.id,
                    decision.verdict,
                    step.__name__,
                    decision.reason,
                )
                return decision
        log.info("%s item %s: accepted", self.name, ctx.item.id)
        return CONTINUE


def _stages() -> tuple[Stage[MailItem], Stage[MatrixItem]]:
    from secir_bot.steps import email as e
    from secir_bot.steps import matrix as m

    email_stage: Stage[MailItem] = Stage(
        "email",
        (
            e.size_limit,  # before any parsing
            e.parse,  # envelope checks come before decryption...
            e.not_a_loop,
            e.not_automated,
            e.encrypted,
            e.decrypt,  # ...sender policy after verification
            e.signed,
            e.signer_is_member,
            e.not_a_replay,
            e.from_not_another_member,
            e.addressed_to_list,
            e.html_text,
            e.not_a_command,
            e.has_text,
        ),
    )
    matrix_stage: Stage[MatrixItem] = Stage(
        "matrix",
        (
            m.parse,
            m.not_own_event,
            m.is_human_message,
            m.was_encrypted,
            m.sender_is_member,
            m.from_a_trusted_device,
            m.has_text,
        ),
    )
    return email_stage, matrix_stage


EMAIL_STEPS, MATRIX_STEPS = _stages()
