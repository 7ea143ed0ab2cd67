"""Pure data shared by the bridges, the pipeline and the store: no I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# The key of the bot's own mark in the content of what it relays into Matrix: an event that
# carries it is never mirrored back (a step drops it; the Matrix renderer writes it).
MARKER = "org.secir.relay"


class Channel(enum.StrEnum):
    """Where a member can be reached, and where an item came from."""

    MATRIX = "matrix"
    EMAIL = "email"


@dataclass(frozen=True)
class Member:
    """One person appointed by a ccTLD (the roster the ``!invite`` workflow fills)."""

    id: int
    tld: str  # A-label, no dot
    tld_display: str  # ".nl", ".рф"
    name: str
    email: str
    fingerprint: str  # full v4 fingerprint, upper-case hex
    matrix_id: str | None
    channels: frozenset[Channel]
    rank: int = 1
    status: str = "active"

    @property
    def label(self) -> str:
        """How the member is shown to others: ``Alice Jansen (.nl)``."""
        return f"{self.name} ({self.tld_display})"

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Post:
    """A message accepted for the channel, whichever side it came from."""

    uid: str  # random, also the local part of the Message-ID we give it
    origin: Channel
    author: Member
    subject: str
    body: str
    parent_uid: str | None = None  # the post this one answers
    root_uid: str | None = None  # the first post of its thread
    attachments: tuple[str, ...] = field(default=())  # names of parts not relayed
    # What readers must know about the post's provenance (shown with it, not stored).
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Device:
    """A Matrix device as seen in a room, for trust-on-first-use."""

    user_id: str
    device_id: str
    ed25519: str


@dataclass(frozen=True)
class Outcome:
    """What became of one inbox item (told to the bridge that received it)."""

    state: str  # "relayed", "rejected", "dropped", "shunted"
    reason: str = ""
