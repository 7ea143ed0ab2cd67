"""The pipeline: ordered tuples of small steps, and the runner that logs each decision.

Each channel has an intake stage (``EMAIL_STEPS``, ``MATRIX_STEPS``) that ends in an
``Inbound``; the ``POLICY_STEPS`` then run once on it, whichever channel it came from. The
order of the steps is data and lives here, in one place; what a step is and returns is the
contract in ``steps/__init__.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

from secir_bot.steps import (
    CONTINUE,
    Ctx,
    Decision,
    MailItem,
    MatrixItem,
    PolicyItem,
    Services,
    Step,
    Verdict,
)
from secir_bot.steps import email as e
from secir_bot.steps import matrix as m
from secir_bot.steps import policy as p
from secir_bot.steps import request as r

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage(Generic[Ctx]):
    name: str
    steps: Sequence[Step[Ctx]]

    async def run(self, ctx: Ctx, services: Services) -> Decision:
        for step in self.steps:
            decision = await step(ctx, services)
            if decision.verdict is not Verdict.CONTINUE:
                log.info(
                    "%s item %s: %s by %s (%s)",
                    self.name,
                    ctx.item.id,
                    decision.verdict,
                    step.__name__,
                    decision.reason,
                )
                return decision
        log.info("%s item %s: accepted", self.name, ctx.item.id)
        return CONTINUE


EMAIL_STEPS: Stage[MailItem] = Stage(
    "email",
    (
        e.size_limit,  # before any parsing
        e.parse,  # envelope checks come before decryption...
        e.not_a_loop,
        e.not_automated,
        e.encrypted,
        e.decrypt,  # ...sender policy after verification
        e.signed,
        e.signer_is_member,
        e.not_a_replay,
        e.from_not_another_member,
        e.addressed_to_list,
        e.html_text,
        e.files_within_limits,
        e.correction_by_author,
    ),
)

# Mail on the request address: the same checks as a post, but a member's mail ends in
# commands, and the procedure's mail (a nomination, a nominee's proof) is told apart first.
REQUEST_STEPS: Stage[MailItem] = Stage(
    "request",
    (
        e.size_limit,
        e.parse,
        e.not_a_loop,
        e.not_automated,
        r.procedure_mail,  # plain nomination, signed-only proof
        e.encrypted,
        e.decrypt,
        r.procedure_answer,  # a proof or nomination that was encrypted
        e.signed,
        e.signer_is_member,
        e.not_a_replay,
        e.from_not_another_member,
        e.html_text,
        r.addressed_to_request,  # ends in "commands"
    ),
)

MATRIX_STEPS: Stage[MatrixItem] = Stage(
    "matrix",
    (
        m.parse,
        m.not_own_event,
        m.accepted_invitation,  # a nominee's Matrix proof (D2)
        m.is_human_message,
        m.command_or_message,  # a command goes to the dispatcher, never to the list
        m.was_encrypted,
        m.sender_is_member,
        m.from_a_trusted_device,
        m.is_text,
    ),
)

POLICY_STEPS: Stage[PolicyItem] = Stage(
    "policy",
    (
        p.command_or_post,  # a command goes to the commands...
        p.has_text,  # ...and what is left is a post
    ),
)
