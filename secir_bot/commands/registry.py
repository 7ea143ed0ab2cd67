"""The registry: the commands one bot offers, put together explicitly.

Nothing registers itself at import time. :func:`build` takes the ``COMMANDS`` tuples of the
topic modules and checks that names and aliases are unique and that every declaration is
well-formed, so a mistake fails at start-up (and in the tests), not when someone types it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from secir_bot.commands import account, audit, dispatch, help, membership, operations, roster
from secir_bot.commands.base import Actor, Command, Front, Kind

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class RegistryError(ValueError):
    """A command declaration is inconsistent (a bug in the declarations, found at build)."""


class Registry:
    """Commands by name and alias; iterates in declaration order."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self._commands: list[Command] = []
        self._by_name: dict[str, Command] = {}
        for command in commands:
            _check(command)
            for name in (command.name, *command.aliases):
                if name in self._by_name:
                    raise RegistryError(
                        f"!{name} is declared twice ({self._by_name[name].name}, {command.name})"
                    )
                self._by_name[name] = command
            self._commands.append(command)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)

    def lookup(self, name: str) -> Command | None:
        return self._by_name.get(name.lower())

    def visible(self, actor: Actor, front: Front) -> list[Command]:
        """The commands ``actor`` may run on ``front``, in declaration order."""
        return [c for c in self._commands if c.allowed(actor, front)]


def _check(command: Command) -> None:
    for name in (command.name, *command.aliases):
        if not _NAME.match(name):
            raise RegistryError(f"!{name}: a command name is lower-case letters, digits, '-'")
    if not command.summary.strip() or not command.help.strip():
        raise RegistryError(f"!{command.name} needs a summary and a help text")
    if not command.fronts:
        raise RegistryError(f"!{command.name} is offered on no front end")
    seen_optional = False
    for i, arg in enumerate(command.args):
        if arg.kind is Kind.TEXT and i != len(command.args) - 1:
            raise RegistryError(f"!{command.name}: free text <{arg.name}> must come last")
        if seen_optional and not arg.optional:
            raise RegistryError(f"!{command.name}: <{arg.name}> follows an optional argument")
        seen_optional = seen_optional or arg.optional
        if not arg.help.strip():
            raise RegistryError(f"!{command.name}: <{arg.name}> has no help")


def build(*groups: Iterable[Command]) -> Registry:
    """One registry from several ``COMMANDS`` tuples."""
    return Registry(command for group in groups for command in group)


def default() -> Registry:
    """Every command secir-bot has, for the running bot (tests build their own)."""
    return build(
        help.COMMANDS,
        dispatch.COMMANDS,
        membership.COMMANDS,
        roster.COMMANDS,
        operations.COMMANDS,
        audit.COMMANDS,
        account.COMMANDS,
    )
