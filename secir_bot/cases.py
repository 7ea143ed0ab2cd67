"""The subscription procedure (D2) as pure code: case states, what a case waits for, codes.

A case is opened by ``!invite .xx`` and moves only forward::

    invited ──> nominated ──> ready ──> approved
       │            │           │
       └────────────┴───────────┴──> rejected | expired

* **invited**: a one-time code went to the ccTLD's administrative contact (IANA's, or an
  address an admin gave with a reason).
* **nominated**: the contact named up to three people; each got a challenge encrypted to
  their key, and Matrix nominees an invitation from the bot.
* **ready**: every nominee proved control of their key (a signed reply carrying their
  challenge) and, with a Matrix id, accepted the bot's invitation.
* **approved** / **rejected** by an admin; **expired** after ``commands.case_expiry_days``.

Codes and challenges are random, single use, and stored only as SHA-256 hashes. Nothing in
this module touches the store, gpg or the network; ``subscription`` does, using these rules.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

MAX_NOMINEES = 3

# Crockford-like alphabet: no 0/O, 1/I/L, U, so a code read out on the phone survives.
_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
CHALLENGE_PREFIX = "SECIR-PROOF-"
CHALLENGE_PATTERN = re.compile(r"SECIR-PROOF-[A-Z0-9]{5}(?:-[A-Z0-9]{5}){3}")
CODE_PATTERN = re.compile(r"\b[A-Z0-9]{5}(?:-[A-Z0-9]{5}){3}\b")


class CaseState(enum.StrEnum):
    INVITED = "invited"
    NOMINATED = "nominated"
    READY = "ready"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


OPEN_STATES = frozenset({CaseState.INVITED, CaseState.NOMINATED, CaseState.READY})

_NEXT: dict[CaseState, frozenset[CaseState]] = {
    CaseState.INVITED: frozenset({CaseState.NOMINATED, CaseState.REJECTED, CaseState.EXPIRED}),
    CaseState.NOMINATED: frozenset({CaseState.READY, CaseState.REJECTED, CaseState.EXPIRED}),
    CaseState.READY: frozenset({CaseState.APPROVED, CaseState.REJECTED, CaseState.EXPIRED}),
    CaseState.APPROVED: frozenset(),
    CaseState.REJECTED: frozenset(),
    CaseState.EXPIRED: frozenset(),
}


def can_move(start: CaseState, end: CaseState) -> bool:
    return end in _NEXT[start]


def _random(groups: int) -> str:
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(groups))


def new_code() -> str:
    """A one-time invitation code: 20 characters (about 98 bits), in groups of five."""
    return _random(4)


def new_challenge() -> str:
    """A nominee's challenge, recognisable in a reply: ``SECIR-PROOF-XXXXX-...``."""
    return CHALLENGE_PREFIX + _random(4)


def secret_hash(text: str) -> str:
    """How codes and challenges are stored: SHA-256 of the upper-cased text."""
    return hashlib.sha256(text.strip().upper().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Nominee:
    id: int
    position: int  # 1-3, the rank the person gets
    name: str
    email: str
    phone: str | None
    fingerprint: str
    key: str  # the armored public key
    matrix_id: str | None
    timezone: str | None
    languages: tuple[str, ...]
    key_proven_at: float | None = None
    matrix_joined_at: float | None = None

    def waiting_for(self) -> list[str]:
        out = []
        if self.key_proven_at is None:
            out.append("the signed answer to their key challenge")
        if self.matrix_id and self.matrix_joined_at is None:
            out.append(f"{self.matrix_id} to accept the bot's invitation")
        return out

    @property
    def proven(self) -> bool:
        return not self.waiting_for()


@dataclass(frozen=True)
class Case:
    id: int
    tld: str  # A-label
    state: CaseState
    contact_email: str
    contact_org: str
    contact_source: str  # "whois" or "override"
    override_reason: str | None
    whois_sha256: str | None
    opened_by: str
    opened_at: float
    expires_at: float
    closed_by: str | None = None
    close_reason: str | None = None
    nominees: tuple[Nominee, ...] = ()

    @property
    def label(self) -> str:
        return f"#{self.id}"

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def waiting_for(self) -> str:
        """What the case needs next, in words for ``!pending``."""
        if self.state is CaseState.INVITED:
            return f"the nomination from the administrative contact {self.contact_email}"
        if self.state is CaseState.NOMINATED:
            parts = [
                f"{n.name} <{n.email}>: {', '.join(n.waiting_for())}"
                for n in self.nominees
                if not n.proven
            ]
            return "; ".join(parts)
        if self.state is CaseState.READY:
            return "an admin's !approve (or !reject)"
        return f"nothing (closed: {self.state})"

    def state_after_proofs(self) -> CaseState:
        """NOMINATED until every nominee is proven, then READY."""
        return (
            CaseState.READY
            if self.nominees and all(n.proven for n in self.nominees)
            else CaseState.NOMINATED
        )
