"""A member's own account: ``key-update`` (by mail: ``key update``).

A member rotates their own key by sending the new public key in a command mail signed with
the key registered for them: the old key vouches for the new one, so nobody who lacks the
old key can move a member's mail to a key of their choosing. The new key passes the same
checks as any member's key (``keycheck.vet``: v4, not expired or revoked, able to sign and
to encrypt, a user id with the member's address); on any problem nothing changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from secir_bot.commands.base import (
    MEMBER_FRONTS,
    Args,
    Change,
    Command,
    Context,
    Invocation,
    NotifyAdmins,
    Refused,
    Reply,
    Role,
    refuse,
)
from secir_bot.commands.membership import offered_key
from secir_bot.crypto import inspect_key
from secir_bot.errors import CryptoError
from secir_bot.keycheck import vet
from secir_bot.model import Member
from secir_bot.store import Tx
from secir_bot.store.members import RosterConflict

_PUBLIC_BLOCK = re.compile(
    r"-----BEGIN PGP PUBLIC KEY BLOCK-----.*?-----END PGP PUBLIC KEY BLOCK-----", re.S
)


async def without_current_key(armored: str, current: str) -> str:
    """``armored`` without the blocks that hold only the member's ``current`` key.

    Thunderbird, set to attach the sender's public key, attaches the key it signs with: a
    ``key update`` mail then carries the old key beside the new one. When nothing else is
    offered the current key stays (a refresh: a renewed expiry, say); several blocks that
    remain are left to ``vet``, which asks for exactly one. Secret key blocks are never
    set aside here: ``vet`` refuses them with its warning.
    """
    blocks = _PUBLIC_BLOCK.findall(armored)
    if len(blocks) < 2 or "PRIVATE KEY BLOCK" in armored:
        return armored
    kept = []
    for block in blocks:
        try:
            fingerprints = {key.fingerprint for key in await inspect_key(block)}
        except CryptoError:
            fingerprints = set()  # unreadable: kept, and vet says so
        if fingerprints != {current}:
            kept.append(block)
    return "\n".join(kept) if kept else blocks[0]


@dataclass(frozen=True)
class NewKey:
    """What became of a key offered to replace a member's: not acceptable (``problems``),
    another member's (``taken``), or imported into the list's keyring: ``same`` when it is
    the member's key already (refreshed: a renewed expiry, say)."""

    fingerprint: str = ""
    problems: tuple[str, ...] = ()
    taken: bool = False
    same: bool = False


async def take_new_key(ctx: Context, member: Member, armored: str) -> NewKey:
    """Check ``armored`` as ``member``'s new key (``keycheck.vet``) and import it if it may
    replace theirs; the roster changes only in the change's transaction (``set_key``)."""
    vetted, problems = await vet(
        email=member.email, armored=armored, fingerprint=None, keyring_dir=None
    )
    if vetted is None:
        return NewKey(problems=tuple(problems))
    fpr = vetted.fingerprint
    if fpr != member.fingerprint and ctx.store.members.by_fingerprint(fpr):
        return NewKey(fpr, taken=True)
    await ctx.keyring.import_key(vetted.armored)
    return NewKey(fpr, same=fpr == member.fingerprint)


def set_key(ctx: Context, tx: Tx, member: Member, fingerprint: str) -> None:
    """Register ``fingerprint`` as ``member``'s key; refused if the roster changed meanwhile."""
    try:
        ctx.store.members.set_fingerprint(tx, member.id, member.fingerprint, fingerprint)
    except RosterConflict as exc:
        raise Refused(str(exc)) from None


async def _key_update(ctx: Context, inv: Invocation, args: Args) -> Reply | Change:
    member = inv.actor.member
    if member is None or not member.active:
        return refuse("you are not an active member")
    armored = offered_key(inv)
    if armored is None:
        return refuse(
            "no key found: paste your new public key (the armoured block) below the line "
            "'key update'; nothing was changed"
        )
    key = await take_new_key(ctx, member, await without_current_key(armored, member.fingerprint))
    if key.problems:
        return refuse(
            "your new key was not accepted, nothing was changed:\n- " + "\n- ".join(key.problems)
        )
    if key.same:
        return Reply(f"your key {member.fingerprint} was refreshed (it is the same key)")
    if key.taken:
        return refuse(f"the key {key.fingerprint} is registered for someone else")

    def apply(tx: Tx) -> Reply:
        set_key(ctx, tx, member, key.fingerprint)
        return Reply(
            f"your key is now {key.fingerprint} (it was {member.fingerprint}): sign with "
            "it from now on; list mail is encrypted to it. Mail signed with the old key is "
            "no longer accepted.",
            effects=(
                NotifyAdmins(
                    f"{member.label} <{member.email}> changed their key from "
                    f"{member.fingerprint} to {key.fingerprint} (a mail signed by the old key)"
                ),
            ),
        )

    return Change(
        "member.key-update",
        member.email,
        "",
        apply,
        evidence={"old_key": member.fingerprint, "new_key": key.fingerprint},
    )


COMMANDS = (
    Command(
        "key-update",
        "replace your key with a new one",
        "Replaces the key registered for you with a new one. Paste the new public key (the "
        "armoured block) below the command line, in a mail signed with your current key: "
        "the old key vouches for the new one. By mail, write 'key update'; the key may "
        "instead be attached as a file (.asc, or .gpg from gpg --export). The new key is "
        "checked as any member's key (OpenPGP v4, not expired or revoked, able to sign and "
        "to encrypt, a user id with your address); if it fails, nothing changes. The "
        "admins are told.",
        Role.MEMBER,
        MEMBER_FRONTS,
        _key_update,
    ),
)
