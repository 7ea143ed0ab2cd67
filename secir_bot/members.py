"""The roster: adding and importing members, with every check in one place.

A member is accepted only with a known ccTLD, a plausible email address, and an OpenPGP
key that is v4, not expired or revoked, usable for both signing and encryption, and carries
the member's email address in a user id. The same checks serve the command line now and
the ``!invite`` workflow later.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secir_bot import cctld, validate
from secir_bot.crypto import Keyring, inspect_key
from secir_bot.errors import CryptoError, MemberError, StoreError
from secir_bot.model import Channel, Member
from secir_bot.store import Store

_email_problem = validate.problem(validate.email)
_mxid_problem = validate.problem(validate.matrix_user_id)


@dataclass(frozen=True)
class MemberRequest:
    tld: str
    name: str
    email: str
    key: str  # armored public key
    matrix_id: str | None = None
    channels: str = ""  # "matrix,email"; empty = every channel the member has
    rank: int = 1


def parse_channels(text: str, matrix_id: str | None) -> frozenset[Channel]:
    if not text.strip():
        return frozenset({Channel.EMAIL, Channel.MATRIX} if matrix_id else {Channel.EMAIL})
    out = set()
    for part in text.split(","):
        try:
            out.add(Channel(part.strip().lower()))
        except ValueError:
            raise MemberError(f"unknown channel {part.strip()!r} (use matrix, email)") from None
    return frozenset(out)


async def add_member(store: Store, keyring: Keyring, req: MemberRequest) -> Member:
    """Validate ``req`` completely, then import the key and record the member."""
    problems: list[str] = []
    try:
        tld = cctld.lookup(req.tld)
    except cctld.UnknownTld as exc:
        problems.append(str(exc))
        tld = None
    email = req.email.strip().lower()
    if (why := _email_problem(email)) is not None:
        problems.append(why)
    if not req.name.strip():
        problems.append("the name is empty")
    elif any(ord(c) < 32 or ord(c) == 127 for c in req.name):
        problems.append("the name holds control characters")
    if req.matrix_id is not None and (why := _mxid_problem(req.matrix_id)) is not None:
        problems.append(why)
    if not 1 <= req.rank <= 3:
        problems.append("rank must be 1, 2 or 3")
    try:
        channels = parse_channels(req.channels, req.matrix_id)
        if Channel.MATRIX in channels and not req.matrix_id:
            problems.append("the matrix channel needs a Matrix id (--matrix-id)")
    except MemberError as exc:
        problems.append(str(exc))
        channels = frozenset()
    fingerprint = ""
    try:
        keys = await inspect_key(req.key)
    except CryptoError as exc:
        problems.append(f"key: {exc}")
    else:
        if len(keys) != 1:
            problems.append(f"key: give exactly one public key (found {len(keys)})")
        else:
            fingerprint = keys[0].fingerprint
            problems.extend(f"key {fingerprint}: {p}" for p in keys[0].problems(email))
            if keys[0].has_secret:
                problems.append(
                    "the key file holds a SECRET key: give the public key only "
                    "(and consider this secret key exposed)"
                )
    if fingerprint and store.members.by_fingerprint(fingerprint):
        problems.append(f"key {fingerprint} is already registered for another member")
    if _email_problem(email) is None and store.members.by_email(email):
        problems.append(f"{email} is already a member")
    if req.matrix_id and store.members.by_matrix_id(req.matrix_id):
        problems.append(f"{req.matrix_id} is already a member")
    if problems:
        raise MemberError("; ".join(problems))
    assert tld is not None
    await keyring.import_key(req.key)
    try:
        return store.members.add(
            tld=tld.a_label,
            tld_display=tld.display,
            name=req.name.strip(),
            email=email,
            fingerprint=fingerprint,
            matrix_id=req.matrix_id,
            channels=channels,
            rank=req.rank,
        )
    except StoreError as exc:
        raise MemberError(str(exc)) from exc


def _read_key(value: str, base: Path) -> str:
    if "-----BEGIN PGP PUBLIC KEY BLOCK-----" in value:
        return value
    path = (base / value).resolve()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MemberError(f"cannot read key file {value}: {exc.strerror}") from exc


def read_import_file(path: Path) -> list[MemberRequest]:
    """Members from TOML (``[[member]]`` tables) or CSV (a header row)."""
    base = path.parent
    rows: list[dict[str, Any]]
    try:
        if path.suffix.lower() == ".toml":
            rows = tomllib.loads(path.read_text(encoding="utf-8")).get("member", [])
        elif path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        else:
            raise MemberError(f"{path.name}: use a .toml or .csv file")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, csv.Error) as exc:
        raise MemberError(f"{path.name}: cannot read: {exc}") from exc
    if not isinstance(rows, list):
        raise MemberError(f"{path.name}: expected [[member]] tables")
    out = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise MemberError(f"{path.name} entry {i}: not a table of fields")
        missing = [k for k in ("tld", "name", "email", "key") if not row.get(k)]
        if missing:
            raise MemberError(f"{path.name} entry {i}: missing {', '.join(missing)}")
        try:
            rank = int(row.get("rank") or 1)
        except ValueError:
            raise MemberError(f"{path.name} entry {i}: rank must be 1, 2 or 3") from None
        out.append(
            MemberRequest(
                tld=str(row["tld"]),
                name=str(row["name"]),
                email=str(row["email"]),
                key=_read_key(str(row["key"]), base),
                matrix_id=row.get("matrix_id") or None,
                channels=str(row.get("channels") or ""),
                rank=rank,
            )
        )
    return out
