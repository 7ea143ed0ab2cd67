"""``!help`` and ``!help <command>``, generated from the registry for the asker's role and place.

Nothing here is written twice: the list, the usage lines and the long texts all come from
the command declarations, so a new command is in the help the moment it is in the registry.
"""

from __future__ import annotations

from secir_bot.commands.base import (
    ALL_FRONTS,
    Arg,
    Args,
    Command,
    Context,
    Front,
    Invocation,
    Kind,
    Reply,
    Role,
)


def overview(commands: list[Command], front: Front) -> str:
    """One line per command: usage and summary."""
    lines = [f"{c.usage(front)} - {c.summary}" for c in commands]
    more = "help <command>" if front is Front.EMAIL else "!help <command>"
    return "\n".join([*lines, f"({more} tells more about one command.)"])


def detail(command: Command, front: Front) -> str:
    """Everything about one command: usage, help, arguments, aliases, where, confirmation."""
    lines = [f"{command.usage(front)} - {command.summary}", "", command.help]
    if command.args:
        lines.append("")
        for arg in command.args:
            optional = ", optional" if arg.optional else ""
            lines.append(f"  <{arg.name}> ({arg.kind}{optional}): {arg.help}")
    lines.append("")
    if command.aliases:
        lines.append("Also: " + ", ".join(f"!{a}" for a in command.aliases))
    lines.append("Where: " + ", ".join(sorted(command.fronts)))
    if command.role is Role.ADMIN:
        lines.append("Who: the list's admins")
    if command.confirm:
        lines.append("Asks for confirmation (!confirm <code>) before it changes anything.")
    return "\n".join(lines)


async def _help(ctx: Context, inv: Invocation, args: Args) -> Reply:
    visible = ctx.registry.visible(inv.actor, inv.front)
    name = args.opt_text("command")
    if name is None:
        return Reply(overview(visible, inv.front))
    command = ctx.registry.lookup(name.removeprefix("!"))
    if command is None or command not in visible:
        return Reply(
            f"there is no command !{name.removeprefix('!')} for you here; "
            "!help lists the ones you can use",
            ok=False,
        )
    return Reply(detail(command, inv.front))


HELP = Command(
    name="help",
    summary="list the commands you can use here, or explain one",
    help=(
        "Without an argument, lists the commands you may use where you asked: admins see "
        "the admin commands in the control room, members see the member commands in the "
        "incident room, in a direct chat with the bot and by mail. With a command name, "
        "explains that command and its arguments."
    ),
    role=Role.MEMBER,
    fronts=ALL_FRONTS,
    run=_help,
    args=(Arg("command", Kind.WORD, "the command to explain", optional=True),),
    aliases=("commands",),
)

COMMANDS = (HELP,)
