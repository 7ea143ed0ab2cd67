"""Steps for mail received on the request address (``commands.request_address``).

Three kinds of mail come there, and each is proven by something else:

* **commands** from a member: signed with their registered key and encrypted, like a post;
  what makes it a command mail is the To the member *signed* (protected headers), never the
  outer To, which anyone on the way can change;
* the **nomination** of the subscription procedure (D2), from a ccTLD's administrative
  contact, who has no key the list knows: usually plain mail. The one-time code in it is
  what proves it; the From/Cc check is done by ``subscription.nomination_received``;
* a nominee's **proof**: a mail signed by the key they were nominated with, carrying the
  challenge sent to that key. Signed only, or signed and encrypted.

These steps only tell the three apart; the front end (``mailfront.py``) carries each out.
The envelope checks (size, loops, auto-replies) have run before.
"""

from __future__ import annotations

import asyncio

from secir_bot import mime
from secir_bot.commands.parse import request_address
from secir_bot.commands.subscription import kind_of_request
from secir_bot.config import Config
from secir_bot.steps import CONTINUE, Decision, MailItem, Services, command, reject


def address(config: Config) -> str:
    """The request address of this list."""
    return request_address(config.list.address, config.commands.request_address)


async def plain_text(data: bytes) -> str:
    """The readable text of a mail or a decrypted entity ("" when unreadable)."""
    try:
        content = await asyncio.to_thread(mime.parse_decrypted, data)
    except mime.MalformedMail:
        return ""
    return content.text


async def procedure_mail(ctx: MailItem, s: Services) -> Decision:
    """Unencrypted mail: a nomination (plain, with its code) or a proof (with its
    challenge; signed only, or unsigned to be refused with an answer to the nominee's key).
    Anything else unencrypted goes on to be refused as such."""
    env = ctx.envelope
    assert env is not None
    if env.ciphertext is not None:
        return CONTINUE
    kind = kind_of_request(await plain_text(ctx.item.raw))
    if kind == "nomination" and env.kind == "plain":
        return command("nomination")
    if kind == "proof":  # signed only; or unsigned, which the nominee is told is no proof
        return command("proof")
    return CONTINUE


async def procedure_answer(ctx: MailItem, s: Services) -> Decision:
    """Encrypted mail that is not from a member: a proof signed by a nominee's key, or a
    nomination (encrypted to the list key by a contact who took the trouble)."""
    d = ctx.decrypted
    assert d is not None
    if d.valid and d.signer is not None and s.store.members.by_fingerprint(d.signer):
        return CONTINUE  # a member: commands (a member nominee still proves by command mail)
    text = ctx.content.text if ctx.content is not None else await plain_text(d.data)
    kind = kind_of_request(text)
    if kind == "proof" and d.signed:
        return command("proof")
    if kind == "nomination":
        return command("nomination")
    return CONTINUE


async def addressed_to_request(ctx: MailItem, s: Services) -> Decision:
    """A command mail names the request address in its signed headers: a member's signed
    post, captured and sent on to the request address, runs no command."""
    assert ctx.content is not None
    recipients = ctx.content.recipients
    own = address(s.config)
    if recipients is None:
        return reject("command-unaddressed", request=own)
    if own not in recipients:
        return reject("command-addressed-elsewhere", request=own)
    return command("commands")
