"""``!audit [n]``: the newest entries of the audit log, and whether the whole chain verifies.

The answer ends with the chain's head (``seq:hash``). Posted in the control room, that line
is an anchor kept outside the bot's database: ``secir-bot audit verify --expect-head`` later
proves that no entry up to it was removed or changed.
"""

from __future__ import annotations

import json
import time

from secir_bot.audit import Entry
from secir_bot.commands.base import (
    ADMIN_FRONTS,
    Arg,
    Args,
    Command,
    Context,
    Invocation,
    Kind,
    Reply,
    Role,
)

MAX_TAIL = 50


def _line(entry: Entry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(entry.at))
    text = f"#{entry.seq} {when} {entry.actor} {entry.action} {entry.target}"
    if entry.reason:
        text += f" - {entry.reason}"
    evidence = entry.evidence_map
    if evidence:
        text += " " + json.dumps(evidence, ensure_ascii=False, sort_keys=True)
    return text


async def _audit(ctx: Context, inv: Invocation, args: Args) -> Reply:
    n = min(args.opt_number("n") or 10, MAX_TAIL)
    verdict = ctx.store.audit.verify()
    lines = [_line(e) for e in ctx.store.audit.tail(n)] or ["(the audit log is empty)"]
    return Reply("\n".join([*lines, verdict.summary()]), ok=verdict.ok)


AUDIT = Command(
    name="audit",
    summary="show the newest audit entries and verify the chain",
    help=(
        "Shows the newest entries of the audit log (10 unless you give a number, at most "
        f"{MAX_TAIL}): time (UTC), who, what, to whom, the reason and the evidence "
        "(Message-IDs, key fingerprints, the hash of the whois answer). Then checks the "
        "whole hash chain and says whether it verifies, with its head: keep that line, "
        "it lets 'secir-bot audit verify --expect-head' prove later that nothing up to it "
        "was removed."
    ),
    role=Role.ADMIN,
    fronts=ADMIN_FRONTS,
    run=_audit,
    args=(Arg("n", Kind.NUMBER, "how many entries to show", optional=True),),
)

COMMANDS = (AUDIT,)
