"""Every command is documented: help text in the registry, and a mention in the manuals.

The list of commands is not written down here: it is read from the registry the bot runs
with, so a new command without a summary, a help text or a line in the manuals fails here
(the pattern of sqlite-utils' tests/test_docs.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secir_bot.commands import ALL_FRONTS, MEMBER_FRONTS, Command, Role
from secir_bot.commands.help import detail
from secir_bot.commands.registry import default

DOCS = Path(__file__).resolve().parent.parent / "docs"
ADMIN_MANUAL = (DOCS / "admin-manual.md").read_text(encoding="utf-8")
OPERATOR_MANUAL = (DOCS / "operator-manual.md").read_text(encoding="utf-8")
COMMANDS = list(default())


def _named(text: str, name: str) -> bool:
    return re.search(rf"`!{re.escape(name)}[` ]", text) is not None


def test_the_registry_is_not_empty() -> None:
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_has_summary_and_help(command: Command) -> None:
    assert command.summary.strip() and not command.summary.endswith(".")
    assert len(command.help) >= 60, "say what the command does, not only its name"
    assert all(arg.help.strip() for arg in command.args)
    for front in ALL_FRONTS & command.fronts:
        assert command.help in detail(command, front)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_is_in_the_admin_manual(command: Command) -> None:
    for name in (command.name, *command.aliases):
        assert _named(ADMIN_MANUAL, name), f"!{name} is not in docs/admin-manual.md"


@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if c.role is Role.MEMBER and c.fronts & MEMBER_FRONTS],
    ids=lambda c: c.name,
)
def test_every_member_command_is_in_the_operator_manual(command: Command) -> None:
    assert _named(OPERATOR_MANUAL, command.name), f"!{command.name} not in operator-manual.md"
    for alias in command.aliases:
        assert alias in OPERATOR_MANUAL, f"{alias} (alias of !{command.name}) not documented"


def test_the_check_finds_an_undocumented_command() -> None:
    assert not _named(ADMIN_MANUAL, "frobnicate")
    assert _named("use `!revoke .nl`", "revoke") and not _named("use `!revoked`", "revoke")
