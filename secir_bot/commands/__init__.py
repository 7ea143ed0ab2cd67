"""Commands: declared values, one registry, one dispatcher, two front ends (Matrix and mail).

base.py          the contract: Command, Arg, Kind, Role, Front, Invocation, Reply, Change,
                 the effects, Context (re-exported here)
registry.py      the commands one bot offers, put together explicitly (``default()``)
dispatch.py      the one place that checks front, role, arguments, confirmation and audit
parse.py         the two front ends' syntax (a ``!command`` line; mail lines)
effects.py       effects as durable JSON
help.py audit.py membership.py roster.py operations.py    one module per topic
subscription.py  the subscription procedure behind !invite and !approve

A new command: a handler and its ``Command`` value in its topic module's ``COMMANDS``, one
line in ``registry.default`` when the topic is new, and its entry in the admin manual
(``tests/test_commands_documented.py`` checks it).
"""

from secir_bot.commands.base import (
    ADMIN_FRONTS,
    ALL_FRONTS,
    MEMBER_FRONTS,
    Actor,
    Announce,
    Arg,
    Args,
    Attachment,
    Catalogue,
    Change,
    Command,
    Context,
    Effect,
    Front,
    Handler,
    InviteToRoom,
    Invocation,
    Kind,
    NotifyAdmins,
    Refused,
    RemoveFromRooms,
    Reply,
    Role,
    RotateRoomKeys,
    SendMail,
    StatusSource,
    TrustDevice,
    WakeOutbox,
    refuse,
)

__all__ = [
    "ADMIN_FRONTS",
    "ALL_FRONTS",
    "MEMBER_FRONTS",
    "Actor",
    "Announce",
    "Arg",
    "Args",
    "Attachment",
    "Catalogue",
    "Change",
    "Command",
    "Context",
    "Effect",
    "Front",
    "Handler",
    "InviteToRoom",
    "Invocation",
    "Kind",
    "NotifyAdmins",
    "Refused",
    "RemoveFromRooms",
    "Reply",
    "Role",
    "RotateRoomKeys",
    "SendMail",
    "StatusSource",
    "TrustDevice",
    "WakeOutbox",
    "refuse",
]
