"""The command contract: what a command is, what it gets, what it returns.

A command is a :class:`Command` value: its name and aliases, a summary and a longer help
text, typed arguments (:class:`Arg` of a :class:`Kind`, checked by ``secir_bot.validate``),
the :class:`Role` needed, the :class:`Front` ends it is offered on, whether it needs a
confirmation, and its handler. Declaring a command registers nothing: each topic module
exports a ``COMMANDS`` tuple and ``registry.build`` puts them together, so two bots can run in
one process with different registries.

A handler gets the :class:`Context` (the services), the :class:`Invocation` (who asked, where,
what) and the validated :class:`Args`. It does its reading and any slow work (gpg, whois) and
returns either a :class:`Reply` (nothing to change: a listing, or a refusal) or a
:class:`Change`: a synchronous ``apply(tx)`` that the dispatcher runs inside one store
transaction together with the audit entry, after asking for confirmation if the command
declares it. Everything a command wants done outside the store (mail to send, people to
invite or remove from rooms, announcements) comes back as :data:`Effect` values in the
reply. The effects of a change are also queued durably in the change's own transaction
(``store.effects``, ids in ``Reply.queued``): a front end carries out the queued effects
and marks each done with the deliveries it made, so a crash loses none and repeats none.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from secir_bot.audit import Evidence
from secir_bot.cctld import CcTld
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.model import Member
from secir_bot.store import Store, Tx
from secir_bot.whois import WhoisServer

_T = TypeVar("_T")


class Role(enum.StrEnum):
    """Who may run a command: any member (admins too), or only the list's admins."""

    MEMBER = "member"
    ADMIN = "admin"


class Front(enum.StrEnum):
    """Where a command arrives and its answer goes."""

    CONTROL_ROOM = "control room"
    INCIDENT_ROOM = "incident room"
    DIRECT = "direct chat"
    EMAIL = "email"


ADMIN_FRONTS = frozenset({Front.CONTROL_ROOM})
MEMBER_FRONTS = frozenset({Front.INCIDENT_ROOM, Front.DIRECT, Front.EMAIL})
ALL_FRONTS = ADMIN_FRONTS | MEMBER_FRONTS


class Kind(enum.StrEnum):
    """What an argument is; each kind has one validator (see ``dispatch.convert``)."""

    TLD = "tld"  # a ccTLD -> CcTld
    EMAIL = "email"  # -> str, lower case
    MXID = "mxid"  # -> str
    PERSON = "person"  # an email address or a Matrix id -> str
    TLD_OR_PERSON = "tld|person"  # -> CcTld or str
    CASE = "case"  # a case number, "12" or "#12" -> int
    NUMBER = "number"  # a positive integer -> int
    FINGERPRINT = "fingerprint"  # a v4 fingerprint -> str
    WORD = "word"  # one token (a command name, a device id, a code) -> str
    TEXT = "text"  # the rest of the line, free text (a reason) -> str


@dataclass(frozen=True)
class Arg:
    name: str
    kind: Kind
    help: str
    optional: bool = False


@dataclass(frozen=True)
class Actor:
    """Who sent the command, with the facts the role check needs.

    The front end fills these in: ``listed_admin`` (named in ``matrix.admins``), ``power_ok``
    (holds the admin power level in the control room), ``device_trusted`` (a device the bot
    trusts, or for mail a valid signature by the member's registered key).
    """

    id: str  # "@alice:server" or "alice@registry.nl"
    member: Member | None = None
    listed_admin: bool = False
    power_ok: bool = False
    device_trusted: bool = False

    @property
    def is_admin(self) -> bool:
        return self.listed_admin and self.power_ok and self.device_trusted

    @property
    def is_member(self) -> bool:
        return self.member is not None and self.member.active


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Invocation:
    """One command as received: the parsed line plus who, where, and how to answer."""

    name: str
    args: tuple[str, ...]
    actor: Actor
    front: Front
    text: str = ""  # the raw command line, for the log and the audit
    body: str = ""  # lines after the command line (a pasted key, say)
    encrypted: bool = True
    ref: str = ""  # the Matrix event id or Message-ID to answer in the thread of
    attachments: tuple[Attachment, ...] = ()


# -- effects: what the front ends do after the reply ---------------------------------------


@dataclass(frozen=True)
class SendMail:
    """A mail from the list, signed by the list key; encrypted when ``encrypt_to`` is set."""

    to: tuple[str, ...]
    subject: str
    body: str
    encrypt_to: tuple[str, ...] = ()  # fingerprints; empty = signed only
    attachments: tuple[Attachment, ...] = ()
    reply_to: str = ""  # where answers go (the request address for procedure mail)


@dataclass(frozen=True)
class Announce:
    """A notice to the whole list, on both channels."""

    text: str


@dataclass(frozen=True)
class NotifyAdmins:
    """A notice in the control room (for answers that arrive on another front)."""

    text: str


@dataclass(frozen=True)
class InviteToRoom:
    user_id: str
    room: Front


@dataclass(frozen=True)
class RemoveFromRooms:
    """Kick from every room of the list, and give the user's devices no further keys."""

    user_id: str
    reason: str


@dataclass(frozen=True)
class RotateRoomKeys:
    """Start a new Megolm session in the room so no later message reaches removed devices."""

    room: Front


@dataclass(frozen=True)
class TrustDevice:
    """Pin the device's current keys as trusted (after an admin checked them)."""

    user_id: str
    device_id: str


@dataclass(frozen=True)
class WakeOutbox:
    pass


Effect = (
    SendMail
    | Announce
    | NotifyAdmins
    | InviteToRoom
    | RemoveFromRooms
    | RotateRoomKeys
    | TrustDevice
    | WakeOutbox
)


@dataclass(frozen=True)
class Reply:
    """The answer to the sender, and the effects for the front end to carry out."""

    text: str
    ok: bool = True
    effects: tuple[Effect, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    evidence: Mapping[str, str] = field(default_factory=dict)  # added to the audit entry
    queued: tuple[int, ...] = ()  # ids of the effects in the durable queue, once committed


def refuse(text: str) -> Reply:
    return Reply(text, ok=False)


class Refused(Exception):
    """Raised inside ``Change.apply`` to roll the transaction back with an answer.

    Outcomes are values everywhere else; inside a transaction an exception is the one way
    to undo what was already written, so ``apply`` raises this when it finds that the
    state changed since the handler looked (the case was approved meanwhile, say).
    """


@dataclass(frozen=True)
class Change:
    """A change to make in the store, with the audit entry that records it."""

    action: str  # e.g. "member.revoke"
    target: str  # e.g. ".nl" or "alice@registry.nl"
    summary: str  # what will happen, shown when a confirmation is asked
    apply: Callable[[Tx], Reply]  # runs inside the transaction; no awaits
    reason: str = ""
    evidence: Evidence = field(default_factory=dict)


class Catalogue(Protocol):
    """The commands one bot offers, as handlers and help see them (``registry.Registry``)."""

    def __iter__(self) -> Iterator[Command]: ...

    def lookup(self, name: str) -> Command | None: ...

    def visible(self, actor: Actor, front: Front) -> list[Command]: ...


class StatusSource(Protocol):
    """Live facts only the running bot knows (channels up, last sync); wired by the app."""

    def channels(self) -> Mapping[str, str]: ...


@dataclass
class Context:
    """The services a handler may use; built once by the composition root."""

    config: Config
    store: Store
    keyring: Keyring
    list_fpr: str
    whois: WhoisServer
    registry: Catalogue
    status: StatusSource | None = None
    clock: Callable[[], float] = time.time


class Args:
    """The validated arguments of one invocation, by name, with typed accessors."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = dict(values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str) -> object | None:
        return self._values.get(name)

    def text(self, name: str) -> str:
        return self._required(name, str)

    def opt_text(self, name: str) -> str | None:
        return self._optional(name, str)

    def number(self, name: str) -> int:
        return self._required(name, int)

    def opt_number(self, name: str) -> int | None:
        return self._optional(name, int)

    def tld(self, name: str) -> CcTld:
        return self._required(name, CcTld)

    def _required(self, name: str, kind: type[_T]) -> _T:
        value = self._values[name]
        assert isinstance(value, kind)
        return value

    def _optional(self, name: str, kind: type[_T]) -> _T | None:
        value = self._values.get(name)
        assert value is None or isinstance(value, kind)
        return value


Handler = Callable[[Context, Invocation, Args], Awaitable[Reply | Change]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    help: str
    role: Role
    fronts: frozenset[Front]
    run: Handler
    args: tuple[Arg, ...] = ()
    confirm: bool = False
    aliases: tuple[str, ...] = ()

    def usage(self, front: Front | None = None) -> str:
        """``!revoke <tld|person> <reason>``; mail commands are written without the ``!``."""
        parts = ["" if front is Front.EMAIL else "!"]
        parts[0] += self.name
        for arg in self.args:
            parts.append(f"[{arg.name}]" if arg.optional else f"<{arg.name}>")
        return " ".join(parts)

    def allowed(self, actor: Actor, front: Front) -> bool:
        """Whether ``actor`` may see and run this command on ``front`` (for help)."""
        if front not in self.fronts:
            return False
        return actor.is_admin if self.role is Role.ADMIN else actor.is_member or actor.is_admin
