"""What the bot needs to know about an OpenPGP key, read from gpg's colon listing.

The listing format (``--with-colons --fixed-list-mode``) is gpg's documented machine
interface (``doc/DETAILS`` in GnuPG): one record per line, fields separated by colons, the
user id escaped with ``\\xHH``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from email.utils import parseaddr

MIN_RSA_BITS = 3072
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class KeyInfo:
    """What the bot needs to know about one OpenPGP key."""

    fingerprint: str
    uids: tuple[str, ...]
    emails: tuple[str, ...]
    can_sign: bool
    can_encrypt: bool
    expires: float | None
    revoked: bool
    expired: bool
    has_secret: bool = False
    algorithm: int = 0  # OpenPGP public-key algorithm of the primary key
    length: int = 0

    @property
    def v4(self) -> bool:
        return len(self.fingerprint) == 40

    def problems(self, email: str | None = None) -> list[str]:
        """Why this key cannot be a member's key (empty when it can)."""
        out = []
        if not self.v4:
            out.append("only OpenPGP v4 keys are supported")
        if self.revoked:
            out.append("the key is revoked")
        elif self.expired:
            out.append("the key has expired")
        else:
            if not self.can_encrypt:
                out.append("the key has no usable encryption subkey")
            if not self.can_sign:
                out.append("the key cannot sign")
        if self.algorithm in (1, 2, 3) and self.length < MIN_RSA_BITS:
            out.append(f"RSA keys need at least {MIN_RSA_BITS} bits (this one has {self.length})")
        if self.algorithm in (16, 17, 20):
            out.append("DSA and ElGamal keys are not accepted; use Ed25519/Cv25519 or RSA")
        if email is not None and email.lower() not in self.emails:
            out.append(f"no user id of the key carries {email}")
        return out


def _unescape(field: bytes) -> str:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), field).decode(
        "utf-8", errors="replace"
    )


def parse_listing(listing: bytes, secret_fprs: set[str]) -> list[KeyInfo]:
    """The keys of a ``--with-colons`` listing (public ``pub`` or secret ``sec`` records)."""
    keys: list[KeyInfo] = []
    primary: list[bytes] | None = None
    fpr = ""
    uids: list[str] = []

    def finish() -> None:
        if primary is None or not fpr:
            return
        validity = primary[1].decode("ascii", errors="replace")
        expires = float(primary[6]) if primary[6].isdigit() else None
        cap = primary[11].decode("ascii", errors="replace") if len(primary) > 11 else ""
        keys.append(
            KeyInfo(
                fingerprint=fpr,
                uids=tuple(uids),
                emails=tuple(parseaddr(u)[1].lower() for u in uids if "@" in u),
                can_sign="S" in cap,
                can_encrypt="E" in cap,
                expires=expires,
                revoked=validity == "r",
                expired=validity == "e" or (expires is not None and expires < time.time()),
                has_secret=fpr in secret_fprs,
                algorithm=int(primary[3]) if primary[3].isdigit() else 0,
                length=int(primary[2]) if primary[2].isdigit() else 0,
            )
        )

    for line in listing.splitlines():
        fields = line.split(b":")
        kind = fields[0]
        if kind in (b"pub", b"sec") and len(fields) > 6:
            finish()
            primary, fpr, uids = fields, "", []
        elif kind == b"fpr" and primary is not None and not fpr and len(fields) > 9:
            fpr = fields[9].decode("ascii", errors="replace").upper()  # the primary's own
        elif kind == b"uid" and primary is not None and len(fields) > 9:
            uids.append(_unescape(fields[9]))
        elif kind in (b"sub", b"ssb") and primary is not None and not fpr:
            primary = None  # a subkey before the primary's fingerprint: not a listing we know
    finish()
    return keys


# Validity letters (field 2) that make a key or subkey unusable whatever the trust model:
# revoked, expired, invalid, disabled.
_UNUSABLE = frozenset("reid")


def encryption_windows(listing: bytes) -> dict[str, float]:
    """Until when each key of a ``--with-colons`` listing can be encrypted to.

    Keyed by primary fingerprint; the value is a Unix time (``math.inf`` when nothing
    expires). A key is left out when it is revoked, expired or disabled now, or has no
    valid encryption-capable (sub)key. The time is the earlier of the primary key's expiry
    and the latest expiry among its encryption subkeys, so a key whose encryption subkey
    expires before the primary is not used past that moment (a cache keeps these times and
    compares them to the clock at each use).
    """
    out: dict[str, float] = {}
    fpr = ""
    primary_until = math.inf
    enc_until: float | None = None
    usable_primary = False
    pending_primary_enc = False  # the primary itself can encrypt; its fpr comes next
    last = b""

    def finish() -> None:
        if fpr and usable_primary and enc_until is not None:
            out[fpr] = min(primary_until, enc_until)

    def expiry(fields: list[bytes]) -> float:
        return float(fields[6]) if len(fields) > 6 and fields[6].isdigit() else math.inf

    for line in listing.splitlines():
        fields = line.split(b":")
        kind = fields[0]
        if kind == b"pub" and len(fields) > 11:
            finish()
            validity = fields[1].decode("ascii", errors="replace")
            caps = fields[11].decode("ascii", errors="replace")
            fpr, enc_until = "", None
            primary_until = expiry(fields)
            usable_primary = validity not in _UNUSABLE and "D" not in caps
            pending_primary_enc = "e" in caps
        elif kind == b"sub" and len(fields) > 11:
            validity = fields[1].decode("ascii", errors="replace")
            if validity not in _UNUSABLE and b"e" in fields[11]:
                until = expiry(fields)
                enc_until = until if enc_until is None else max(enc_until, until)
        elif kind == b"fpr" and last == b"pub" and len(fields) > 9:
            fpr = fields[9].decode("ascii", errors="replace").upper()
            if pending_primary_enc:
                enc_until = primary_until
        last = kind
    finish()
    return out
