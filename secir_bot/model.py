"""Pure data shared by the bridges, the pipeline and the store: no I/O here."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

# The key of the bot's own mark in the content of what it relays into Matrix: an event that
# carries it is never mirrored back (a step drops it; the Matrix renderer writes it).
MARKER = "org.secir.relay"


def new_uid() -> str:
    """A new post's id: random, and the local part of the Message-ID the list gives it."""
    return secrets.token_hex(10)


def message_id(uid: str, domain: str) -> str:
    """The Message-ID of the list's mail for the post (or notice) ``uid``."""
    return f"<{uid}@{domain}>"


class Channel(enum.StrEnum):
    """Where a member can be reached, and where an item came from."""

    MATRIX = "matrix"
    EMAIL = "email"


class InboxState(enum.StrEnum):
    """Where a received item stands; every state but NEW and PARKED is a decision."""

    NEW = "new"  # durable, waiting to be decided
    PARKED = "parked"  # a Matrix event waiting for its room key
    RELAYED = "relayed"
    REJECTED = "rejected"
    DROPPED = "dropped"
    SHUNTED = "shunted"  # processing broke; set aside, reported, never relayed
    COMMAND = "command"  # a command, or the procedure's mail: answered, never relayed
    UNDECRYPTABLE = "undecryptable"  # a Matrix event whose key never came (or cannot)


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"  # failed for good; an admin may retry it


class LinkKind(enum.StrEnum):
    """What names a post on a channel (``links`` maps these to posts)."""

    MSGID = "msgid"  # a Message-ID: the author's own, and the list's copy
    EVENT = "event"  # a Matrix event id


class DeliveryKind(enum.StrEnum):
    POST = "post"  # a post to the list's readers
    NOTICE = "notice"  # bot text: admin notices, answers, explanations


class DeviceVerdict(enum.StrEnum):
    """The Matrix bridge's verdict on the device that sent an event (or may get keys)."""

    TRUSTED = "trusted"
    BLOCKED = "blocked"  # its keys changed under a known device id
    REFUSED = "refused"  # its owner is not in this room's audience
    UNKNOWN = "unknown"  # the homeserver lists no such device for the sender
    MISMATCH = "mismatch"  # the message's envelope and its keys name different devices
    UNSIGNED = "unsigned"  # its owner has cross-signing but did not sign this device
    IDENTITY = "identity-changed"  # its owner's identity changed; waits for an admin
    NO_XSIGN = "no-cross-signing"  # its owner has no cross-signing, and the policy refuses
    FORWARDED = "forwarded"  # the room key came forwarded: the sender cannot be verified


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
class File:
    """A file relayed with a post: checked against the list's limits at intake, its name
    made safe (``fidelity.attachments``), its bytes as the author sent them."""

    filename: str
    content_type: str  # "type/subtype", lower case
    data: bytes


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
    # The text as Matrix HTML (a member's formatted_body, or an HTML mail already
    # sanitised for Matrix); sanitised again by each renderer before it is shown.
    formatted: str | None = None
    files: tuple[File, ...] = field(default=())  # relayed with it (kept in the outbox rows)
    corrects: str | None = None  # the uid of the post whose corrected text this is
    # What readers must know about the post's provenance (shown with it, not stored).
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Device:
    """A Matrix device as seen in a room, for trust-on-first-use."""

    user_id: str
    device_id: str
    ed25519: str


@dataclass(frozen=True)
class Inbound:
    """One received message after its channel's intake: channel-neutral from here on.

    Every field is what the intake verified: the author is the member that the signing key
    (mail) or the trusted device (Matrix) names, and text, subject and thread ids are what
    they signed or sent end-to-end encrypted; ``replies_signed`` says when the thread ids
    are not covered (a mail whose client left its thread headers out of the signature).
    """

    channel: Channel
    room: str | None  # the room it was sent in; None for mail to the list address
    author: Member
    text: str  # as it will be relayed (a Matrix client's reply quote removed)
    subject: str | None  # the signed subject line ("" if none); None: the channel has none
    source: tuple[LinkKind, str]  # its own id on its channel (Message-ID or event id)
    replies_to: tuple[tuple[LinkKind, str], ...] = ()  # what it answers, nearest first
    thread_root: tuple[LinkKind, str] | None = None  # the thread it was sent in, if named
    replies_signed: bool = True
    attachments: tuple[str, ...] = ()  # names of parts that are not relayed
    signature: tuple[str, str] | None = None  # (signer's fingerprint, signature id)
    notes: tuple[str, ...] = ()  # what readers must know about its provenance
    formatted: str | None = None  # the same text as Matrix HTML, when it came as HTML
    files: tuple[File, ...] = ()  # its files, within the list's limits
    lead: str = ""  # the first line to name it by, when it has no subject (no mentions)
    # A correction or a retraction of an earlier post: ("correction" | "retraction", uid).
    revises: tuple[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one inbox item (told to the bridge that received it)."""

    state: InboxState
    reason: str = ""


@dataclass(frozen=True)
class MatrixFacts:
    """What the Matrix bridge tells the steps about one event.

    Kept as the inbox row's ``meta`` JSON (``to_meta``/``from_meta``, the same keys as
    ever); read into this value once, where the steps take the item.
    """

    room_id: str = ""
    encrypted: bool = False  # it arrived end-to-end encrypted
    device: str | None = None  # the bridge's ``DeviceVerdict`` on the sending device
    parked_at: float | None = None  # when it was stored, still encrypted
    session_id: str | None = None  # the room key (Megolm session) it needs
    reported: bool = False  # the admins were told that its key has not come
    bare_file: bool = False  # parked while its file is fetched, and it has no caption

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> MatrixFacts:
        parked_at = meta.get("parked_at")
        device = meta.get("device")
        session_id = meta.get("session_id")
        return cls(
            room_id=str(meta.get("room_id", "")),
            encrypted=bool(meta.get("encrypted")),
            device=None if device is None else str(device),
            parked_at=None if parked_at is None else float(parked_at),
            session_id=None if session_id is None else str(session_id),
            reported=bool(meta.get("reported")),
            bare_file=bool(meta.get("bare_file")),
        )

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"room_id": self.room_id, "encrypted": self.encrypted}
        if self.parked_at is not None:
            meta["parked_at"] = self.parked_at
        if self.session_id is not None:
            meta["session_id"] = self.session_id
        if self.device is not None:
            meta["device"] = self.device
        if self.reported:
            meta["reported"] = True
        if self.bare_file:
            meta["bare_file"] = True
        return meta


@dataclass(frozen=True)
class MailFacts:
    """What the email bridge tells the steps about one mail (its inbox row's ``meta``)."""

    imap_uid: str | None = None
    size: int = 0  # RFC822.SIZE as the server reported it
    headers_only: bool = False  # larger than the list's limit: only its header was fetched

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> MailFacts:
        uid = meta.get("imap_uid")
        return cls(
            imap_uid=None if uid is None else str(uid),
            size=int(meta.get("size") or 0),
            headers_only=bool(meta.get("headers_only")),
        )

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"imap_uid": self.imap_uid, "size": self.size}
        if self.headers_only:
            meta["headers_only"] = True
        return meta
