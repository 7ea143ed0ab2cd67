"""Helpers for the command tests: a real store and keyring in temp dirs, actors, a context.

Not a fake of anything: the store is a real SQLite file, the keyring a real GnuPG home, and
the whois server (where a test needs one) the sandbox responder on loopback.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from secir_bot.commands import Actor, Context, Front, Invocation
from secir_bot.commands.parse import matrix_command
from secir_bot.commands.registry import Registry
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.model import Channel, Member
from secir_bot.sandbox.world import offline_config
from secir_bot.store import Store
from secir_bot.whois import WhoisServer

ADMIN = Actor("@admin:test.local", listed_admin=True, power_ok=True, device_trusted=True)
OTHER_ADMIN = Actor("@admin2:test.local", listed_admin=True, power_ok=True, device_trusted=True)
STRANGER = Actor("@nobody:test.local")


def member_actor(member: Member, channel: Channel = Channel.MATRIX) -> Actor:
    ident = member.matrix_id if channel is Channel.MATRIX and member.matrix_id else member.email
    return Actor(ident, member=member, device_trusted=True)


def invocation(
    line: str, actor: Actor = ADMIN, front: Front = Front.CONTROL_ROOM, **kw: object
) -> Invocation:
    parsed = matrix_command(line)
    assert parsed is not None, line
    inv = Invocation(
        name=parsed.name,
        args=parsed.args,
        actor=actor,
        front=front,
        text=parsed.text,
        body=parsed.body,
        ref="$event:test.local",
    )
    return replace(inv, **kw)  # type: ignore[arg-type]


@contextmanager
def command_context(
    registry: Registry, whois: WhoisServer | None = None, config: Config | None = None
) -> Iterator[Context]:
    directory = Path(tempfile.mkdtemp(prefix="cmd"))
    home = Path(tempfile.mkdtemp(prefix="g"))  # short: gpg-agent's socket path
    store = Store.open(directory / "store", create=True)
    keyring = Keyring.create(home)
    try:
        yield Context(
            config=config or offline_config(directory, "test.example"),
            store=store,
            keyring=keyring,
            list_fpr="",
            whois=whois or WhoisServer(host="127.0.0.1", port=9, timeout=1),
            registry=registry,
        )
    finally:
        keyring.close()
        store.close()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)
