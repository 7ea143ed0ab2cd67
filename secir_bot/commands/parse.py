"""The two front ends' syntax: a Matrix message ``!name args`` and the lines of a command mail.

Matrix: a message whose first line starts with ``!`` is a command. Its arguments are split
like a shell does, so a reason with spaces may be quoted (``!revoke .nl "key lost"``), but
a free-text argument at the end needs no quotes. Lines after the first are the command's
*body* (a pasted public key, say).

Mail: the body of a signed and encrypted mail to the list's *request address* holds one
command per line, with or without the ``!``. Reading stops at the signature delimiter
(``-- ``) and at the first quoted line (``>``) or the "On ... wrote:" line before it, so a
reply to the bot's answer does not repeat the old commands. Blank lines are skipped; an
armoured key block belongs to the command line before it, as its body.

How a command mail is told apart from a post: by its address, the way list managers do it
(Mailman's ``-request`` address). The request address is ``list+request@domain`` by
default, a subaddress that most mail servers deliver to the list's own mailbox with no
set-up; ``commands.request_address`` in the config may name another one, such as
``list-request@domain`` (an alias the mail server delivers to the same mailbox).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

MAX_MAIL_COMMANDS = 20  # a mail with more is cut there, with a note in the answer

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_ATTRIBUTION = re.compile(
    r"^(on|am|le|em|el) .+(wrote|schrieb|a écrit|escreveu|escribió):\s*$", re.I
)
_BEGIN_BLOCK = "-----BEGIN PGP"
_END_BLOCK = "-----END PGP"


class ParseError(ValueError):
    """The line looks like a command but cannot be read; the message says why."""


@dataclass(frozen=True)
class Line:
    """One command as written: its name (lower case), its arguments, and its body."""

    name: str
    args: tuple[str, ...]
    text: str
    body: str = ""


def _split(line: str) -> tuple[str, tuple[str, ...]]:
    try:
        words = shlex.split(line.translate(_SMART_QUOTES), posix=True)
    except ValueError:
        raise ParseError(f"cannot read {line!r}: a quote is not closed") from None
    if not words:
        raise ParseError("an empty command")
    name = words[0].lower()
    if not _NAME.match(name):
        raise ParseError(f"{words[0]!r} is not a command name")
    return name, tuple(words[1:])


def matrix_command(body: str) -> Line | None:
    """The command in a Matrix message, or None when the message is not a command."""
    first, _, rest = body.strip().partition("\n")
    first = first.strip()
    # "!!" or "! look" is excitement, not a command: a command name starts with a letter.
    if not first.startswith("!") or not first[1:2].isalpha():
        return None
    name, args = _split(first[1:])
    return Line(name=name, args=args, text=first, body=rest.strip("\n"))


def is_matrix_command(body: str) -> bool:
    """Whether a Matrix message is meant as a command (even one that cannot be read, which
    gets an answer saying why rather than being posted to the list)."""
    first = body.strip().partition("\n")[0].strip()
    return first.startswith("!") and first[1:2].isalpha()


def mail_commands(body: str) -> tuple[list[Line], list[str]]:
    """The commands in a command mail's text, and a problem text for each unreadable line."""
    lines: list[Line] = []
    problems: list[str] = []
    raw = body.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(raw):
        line = raw[i].rstrip()
        i += 1
        if line == "--" or raw[i - 1] == "-- " or line.startswith(">") or _ATTRIBUTION.match(line):
            break
        if not line.strip():
            continue
        if line.startswith(_BEGIN_BLOCK):
            block = [line]
            while i < len(raw) and not raw[i - 1].startswith(_END_BLOCK):
                block.append(raw[i].rstrip())
                i += 1
            text = "\n".join(block)
            if lines:
                last = lines[-1]
                lines[-1] = Line(last.name, last.args, last.text, (last.body + "\n" + text).strip())
            else:
                problems.append("a key block with no command line before it was ignored")
            continue
        if len(lines) == MAX_MAIL_COMMANDS:
            problems.append(f"only the first {MAX_MAIL_COMMANDS} commands of a mail are read")
            break
        text = line.strip()
        try:
            name, args = _split(text.removeprefix("!"))
        except ParseError as exc:
            problems.append(str(exc))
            continue
        lines.append(Line(name=name, args=args, text=text))
    return lines, problems


def request_address(list_address: str, configured: str = "") -> str:
    """The address command mail goes to: ``configured``, or ``local+request@domain``."""
    if configured:
        return configured.lower()
    local, _, domain = list_address.lower().rpartition("@")
    return f"{local}+request@{domain}"


def is_command_mail(recipients: Iterable[str], request: str) -> bool:
    """Whether a mail addressed to ``recipients`` (To, Cc, Delivered-To) is a command mail."""
    return any(address.strip().lower() == request.lower() for address in recipients)
