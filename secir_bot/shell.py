"""Admin commands on the host: ``secir-bot member remove`` and ``secir-bot export-key``.

The shell is an admin's second desk (when the control room is unreachable, or for scripts):
these run the same declared commands as the control room (``!revoke``, ``!listkey``) through
the same handler, and commit a change with its audit entry and its durable effects exactly
as the dispatcher does (``dispatch.commit``). The shell itself is the confirmation: the
admin typed the command on the bot's host. The audit names the actor ``shell:<user>``.

The effects (removal from the rooms, a new room key, the announcement) are queued in the
store; the running bot carries them out at its next round, or at its next start.
"""

from __future__ import annotations

import getpass

from secir_bot.commands import Actor, Change, Context, Front, Invocation, Reply, refuse
from secir_bot.commands.dispatch import commit, parse_args
from secir_bot.commands.registry import default
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.store import LIST_FPR_KEY, Store
from secir_bot.whois import WhoisServer


def actor() -> Actor:
    """The admin at the shell: trusted as an admin by being on the host."""
    name = f"shell:{getpass.getuser()}"
    return Actor(name, listed_admin=True, power_ok=True, device_trusted=True)


async def run(config: Config, name: str, words: tuple[str, ...]) -> Reply:
    """Run the admin command ``name`` with ``words`` against the store, without confirmation."""
    store = Store.open(config.store_path)
    keyring = Keyring(config.store_path / "gnupg")
    try:
        ctx = Context(
            config=config,
            store=store,
            keyring=keyring,
            list_fpr=store.kv.get(LIST_FPR_KEY) or "",
            whois=WhoisServer(config.whois.host, config.whois.port, config.whois.timeout),
            registry=default(),
        )
        command = ctx.registry.lookup(name)
        assert command is not None, name
        args, problems = parse_args(command, words)
        if args is None:
            return refuse("\n".join(problems))
        me = actor()
        inv = Invocation(name, words, me, Front.CONTROL_ROOM, text=" ".join((name, *words)))
        result = await command.run(ctx, inv, args)
        if isinstance(result, Change):
            return commit(ctx, me.id, result, name=name)
        return result
    finally:
        keyring.close()
        store.close()
