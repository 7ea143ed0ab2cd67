"""The Step contract, beside the steps: what a step gets and what it returns.

A step is a small ``async def step(ctx, services) -> Decision``. It looks at one received
item and returns a ``Decision``: go on, drop it quietly, or reject it with a reason (the
sender and the admins are told). Exceptions mean that something broke, never that the
input was bad. The order of the steps is data and lives in ``pipeline.py``, in one place.

email.py    the intake of mail on the list address (envelope, decryption, sender policy)
request.py  what is particular to mail on the request address (commands, the procedure)
matrix.py   the intake of events in the incident room
policy.py   what is checked once, whichever channel a message came from
reasons.py  reason codes and their English texts
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from secir_bot.config import Config
from secir_bot.crypto import Decrypted, Keyring
from secir_bot.fidelity.relations import Edit
from secir_bot.mime import Content, Envelope
from secir_bot.model import File, Inbound, MailFacts, MatrixFacts, Member
from secir_bot.steps import reasons
from secir_bot.store import InboxItem, Store


class Verdict(enum.StrEnum):
    CONTINUE = "continue"
    DROP = "drop"  # quietly: loops, duplicates, auto-replies
    REJECT = "reject"  # the sender (if a member) and the admins are told why
    COMMAND = "command"  # a command: the dispatcher answers it; it is never relayed


@dataclass(frozen=True)
class Decision:
    """A step's verdict, with the code of its reason and the code's parameters."""

    verdict: Verdict
    code: str = ""
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The reason in English (``reasons.ENGLISH``)."""
        return reasons.text(self.code, self.params) if self.code else ""


CONTINUE = Decision(Verdict.CONTINUE)


def drop(code: str, **params: object) -> Decision:
    return Decision(Verdict.DROP, code, params)


def reject(code: str, **params: object) -> Decision:
    return Decision(Verdict.REJECT, code, params)


def command(code: str = "command-line", **params: object) -> Decision:
    return Decision(Verdict.COMMAND, code, params)


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
    formatted: str | None = None  # an HTML-only mail's HTML, sanitised for Matrix
    revises: tuple[str, str] | None = None  # ("correction", uid of the post it corrects)
    facts: MailFacts = field(init=False)  # what the email bridge noted, read once

    def __post_init__(self) -> None:
        self.facts = MailFacts.from_meta(self.item.meta)


@dataclass
class MatrixItem:
    """Working state for one Matrix event."""

    item: InboxItem
    event: dict[str, Any] = field(default_factory=dict)
    room_id: str = ""
    sender: Member | None = None
    text: str = ""  # the message as mail text (``fidelity.totext``), once read
    lead: str = ""  # its first line without the mentions it opens with
    files: tuple[File, ...] = ()  # a file or picture, as the bridge fetched it
    edit: Edit | None = None  # an edit (m.replace) of an earlier message
    redacts: str | None = None  # a redaction: the event id it removes
    revises: tuple[str, str] | None = None  # ("correction" | "retraction", the post's uid)
    facts: MatrixFacts = field(init=False)  # what the Matrix bridge noted, read once

    def __post_init__(self) -> None:
        self.facts = MatrixFacts.from_meta(self.item.meta)


@dataclass
class PolicyItem:
    """A message on its way through the channel-neutral policy steps."""

    item: InboxItem
    inbound: Inbound


Ctx = TypeVar("Ctx", MailItem, MatrixItem, PolicyItem)
Step = Callable[[Ctx, Services], Awaitable[Decision]]
