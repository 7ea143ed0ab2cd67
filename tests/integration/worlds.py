"""Building a ``World`` on the test suite's Postfix + Dovecot stack."""

from __future__ import annotations

from pathlib import Path

from servers import MailStack

from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import World


def world_on(synapse: Synapse, mail_stack: MailStack, directory: Path) -> World:
    """A World on ``synapse`` and ``mail_stack``; ``directory`` must be a short path
    (the bot's GnuPG home lives below it, and gpg-agent's socket path is limited)."""
    return World(
        synapse=synapse,
        directory=directory,
        domain="test.example",
        mail_host="127.0.0.1",
        smtp_port=mail_stack.smtp_port,
        imap_port=mail_stack.imap_port,
        add_mail_user=mail_stack.add_user,
    )
