"""The audit log's hash chain: what an entry is, how it is hashed, and how a chain is checked.

Pure code, no I/O; ``store.audit`` keeps the entries in SQLite. Every entry carries the hash
of the entry before it, so that editing, deleting, inserting or reordering any entry breaks
the chain at that point::

    hash(n) = SHA-256( hash(n-1) | canonical JSON of [seq, at, actor, action, target,
                                                      reason, evidence] )

The first entry links to 64 zeros. Removing the *newest* entries leaves a shorter chain that
is still whole; only a head recorded elsewhere catches that (``!audit`` shows the head in
the control room, whose history is outside the bot's database, and ``secir-bot audit
verify --expect-head`` checks against it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

GENESIS = "0" * 64

# Evidence is small and structured: Message-IDs, fingerprints, the whois answer's hash.
Evidence = Mapping[str, str | Sequence[str]]


def canonical_evidence(evidence: Evidence) -> str:
    """The one JSON spelling of an evidence map (sorted keys, no spaces, lists kept)."""
    clean = {k: (v if isinstance(v, str) else list(v)) for k, v in evidence.items()}
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def entry_hash(
    prev: str, seq: int, at: float, actor: str, action: str, target: str, reason: str, evidence: str
) -> str:
    """The hash of one entry, given the stored ``evidence`` text exactly as kept."""
    body = json.dumps(
        [seq, at, actor, action, target, reason, evidence],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev + "|" + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One audit entry as stored."""

    seq: int
    at: float
    actor: str
    action: str
    target: str
    reason: str
    evidence: str  # canonical JSON, see canonical_evidence
    prev: str
    hash: str

    @property
    def evidence_map(self) -> dict[str, object]:
        value = json.loads(self.evidence)
        return value if isinstance(value, dict) else {}

    def expected_hash(self) -> str:
        return entry_hash(
            self.prev,
            self.seq,
            self.at,
            self.actor,
            self.action,
            self.target,
            self.reason,
            self.evidence,
        )


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a chain: whole or not, and where it breaks."""

    count: int
    head: str  # "seq:hash" of the newest entry, or "0:" + GENESIS for an empty log
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"the audit chain verifies: {self.count} entries, head {self.head}"
        return "THE AUDIT CHAIN IS BROKEN: " + "; ".join(self.problems)


def verify(entries: Iterable[Entry], expect_head: str | None = None) -> Verdict:
    """Check a chain given in ``seq`` order; ``expect_head`` is a "seq:hash" seen earlier.

    Each problem names the first entry where the chain breaks and what that means, so an
    admin knows where to look; checking goes on so that every break is reported.
    """
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    count = 0
    head = f"0:{GENESIS}"
    seen: dict[int, str] = {}
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            problems.append(
                f"entry {entry.seq} comes where entry {expected_seq} should: "
                "entries were deleted, inserted or reordered"
            )
        if entry.prev != prev:
            problems.append(f"entry {entry.seq} does not link to the entry before it")
        if entry.expected_hash() != entry.hash:
            problems.append(f"entry {entry.seq} does not match its hash: it was edited")
        prev = entry.hash
        expected_seq = entry.seq + 1
        head = f"{entry.seq}:{entry.hash}"
        seen[entry.seq] = entry.hash
    if expect_head is not None:
        seq_text, _, digest = expect_head.partition(":")
        if not seq_text.isdigit() or seen.get(int(seq_text)) != digest:
            problems.append(
                f"the expected head {expect_head} is not in the chain: entries after it "
                "were removed, or the log was replaced"
            )
    return Verdict(count=count, head=head, problems=tuple(problems))
