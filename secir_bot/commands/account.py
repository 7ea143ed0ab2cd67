"""A member's own account: ``key-update`` (by mail: ``key update``).

A member rotates their own key by sending the new public key in a command mail signed with
the key registered for them: the old key vouches for the new one, so nobody who lacks the
old key can move a member's mail to a key of their choosing. The new key passes the same
checks as any member's key (``keycheck.vet``: v4, not expired or revoked, able to sign and
to encrypt, a user id with the member's address); on any problem nothing changes.
"""

from __future__ import annotations

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
from secir_bot.keycheck import vet
from secir_bot.store import Tx
from secir_bot.store.members import RosterConflict


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
    vetted, problems = await vet(
        email=member.email, armored=armored, fingerprint=None, keyring_dir=None
    )
    if vetted is None:
        return refuse(
            "your new key was not accepted, nothing was changed:\n- " + "\n- ".join(problems)
        )
    if vetted.fingerprint == member.fingerprint:
        await ctx.keyring.import_key(vetted.armored)  # a renewed expiry: the same key
        return Reply(f"your key {member.fingerprint} was refreshed (it is the same key)")
    if ctx.store.members.by_fingerprint(vetted.fingerprint):
        return refuse(f"the key {vetted.fingerprint} is registered for someone else")
    await ctx.keyring.import_key(vetted.armored)

    def apply(tx: Tx) -> Reply:
        try:
            ctx.store.members.set_fingerprint(tx, member.id, member.fingerprint, vetted.fingerprint)
        except RosterConflict as exc:
            raise Refused(str(exc)) from None
        return Reply(
            f"your key is now {vetted.fingerprint} (it was {member.fingerprint}): sign with "
            "it from now on; list mail is encrypted to it. Mail signed with the old key is "
            "no longer accepted.",
            effects=(
                NotifyAdmins(
                    f"{member.label} <{member.email}> changed their key from "
                    f"{member.fingerprint} to {vetted.fingerprint} (a mail signed by the old key)"
                ),
            ),
        )

    return Change(
        "member.key-update",
        member.email,
        "",
        apply,
        evidence={"old_key": member.fingerprint, "new_key": vetted.fingerprint},
    )


COMMANDS = (
    Command(
        "key-update",
        "replace your key with a new one",
        "Replaces the key registered for you with a new one. Paste the new public key (the "
        "armoured block) below the command line, in a mail signed with your current key: "
        "the old key vouches for the new one. By mail, write 'key update'. The new key is "
        "checked as any member's key (OpenPGP v4, not expired or revoked, able to sign and "
        "to encrypt, a user id with your address); if it fails, nothing changes. The "
        "admins are told.",
        Role.MEMBER,
        MEMBER_FRONTS,
        _key_update,
    ),
)
