"""Steps that run once on every message, whichever channel it came from (on its Inbound).

They come after each channel's intake, which has checked the crypto and named the author:
what is left is policy about the message itself. Today: is it a command or a post, and has
a post any text. Later: size and format, TLP, incident tags.
"""

from __future__ import annotations

from secir_bot.model import Channel
from secir_bot.steps import CONTINUE, Decision, PolicyItem, Services, command, reject

COMMAND_WORDS = ("help", "unsubscribe", "subscribe")


async def command_or_post(ctx: PolicyItem, s: Services) -> Decision:
    """A command is never posted. By mail, the List-Help and List-Unsubscribe links produce
    a bare command word (in the signed subject or as the whole text): that word goes to the
    command front end by mail and is answered by mail. In the rooms a ``!command`` never
    gets here (``steps/matrix.command_or_message``)."""
    inbound = ctx.inbound
    if inbound.channel is not Channel.EMAIL:
        return CONTINUE
    subject = (inbound.subject or "").strip().lower()  # only what was signed counts
    body = inbound.text.strip().lower()
    word = next((w for w in COMMAND_WORDS if subject == w or body == w), None)
    if word is not None:
        return command("command", word=word)
    return CONTINUE


async def has_text(ctx: PolicyItem, s: Services) -> Decision:
    """A post says something."""
    if not ctx.inbound.text.strip():
        what = "mail" if ctx.inbound.channel is Channel.EMAIL else "message"
        return reject("no-text", what=what)
    return CONTINUE
