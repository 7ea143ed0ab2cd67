"""The email front end of the commands, and the subscription procedure's mail.

Mail whose outer To, Cc or Delivered-To names the request address
(``commands.request_address``; ``list+request@domain`` by default, which the mail server
delivers to the list's own mailbox) takes the ``REQUEST_STEPS`` of ``pipeline.py`` instead
of the post's. The outer headers only choose that way: what the mail may do is decided by
what proves it (see ``steps/request.py``):

* a member's command mail (signed with their key, encrypted, its *signed* To naming the
  request address): every line is a command (``Front.EMAIL``), run by the dispatcher, and
  all are answered in ONE mail, signed by the list and encrypted to the member;
* a bare ``help`` or ``unsubscribe`` sent to the list address (the List-Help and
  List-Unsubscribe links) is one command, answered the same way;
* a nomination (the code proves it) and a nominee's proof (the signature and the challenge
  prove it) go to ``commands.subscription``. Their answers go to the case's contact and to
  the nominee's key, never to an address the mail merely claims.

A command's signature is recorded as seen (with the inbox item) before its commands run, so
a captured command mail sent again is refused as a replay and nothing runs twice. A crash
after that and before the answer is queued leaves the item undecided with its signature
recorded: when it is decided again (after the restart) no command is run again, and the
member is answered from the audit log with what their mail carried out (``_resumed``).

Effects (mail to send, room changes) are queued durably by the
dispatcher in each change's own transaction (answers to non-members too, here); the
executor (``commands/executor.py``) carries them out, woken after every decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime

from secir_bot import mime
from secir_bot.bridges import MailRenderer
from secir_bot.cases import CHALLENGE_PATTERN
from secir_bot.commands import Actor, Context, Front, Invocation, Reply, SendMail, subscription
from secir_bot.commands.dispatch import Dispatcher
from secir_bot.commands.effects import dumps
from secir_bot.commands.parse import Line, mail_commands
from secir_bot.crypto import armor_keys
from secir_bot.fidelity.attachments import AttachmentLimits, walk
from secir_bot.mime.headers import parse_bounded
from secir_bot.model import InboxState, Member, Outcome, new_uid
from secir_bot.nomination import parse as parse_nomination
from secir_bot.notices import Notices
from secir_bot.pipeline import REQUEST_STEPS
from secir_bot.steps import Decision, MailItem, Services, Verdict
from secir_bot.steps import request as request_steps
from secir_bot.store import InboxItem, NewDelivery
from secir_bot.store.audit import SYSTEM_ACTOR
from secir_bot.store.signatures import record as record_signature

log = logging.getLogger(__name__)

# Two-word commands a person writes by mail, and the command they name.
_TWO_WORDS = {("key", "update"): "key-update"}


class MailFront:
    """Decides the mail on the request address, and answers command words by mail."""

    def __init__(
        self,
        services: Services,
        commands: Context,
        mail: MailRenderer,
        notices: Notices,
    ) -> None:
        self.s = services
        self.ctx = commands
        self.dispatcher = Dispatcher(commands)
        self.mail = mail
        self.notices = notices
        self.address = request_steps.address(services.config)

    def addressed(self, item: InboxItem) -> bool:
        """Whether ``item`` came to the request address (a routing hint, no more)."""
        return self.address in mime.outer_recipients(item.raw)

    async def decide(self, item: InboxItem) -> Outcome:
        resumed = await self._resumed(item)
        if resumed is not None:
            return resumed
        ctx = MailItem(item)
        decision = await REQUEST_STEPS.run(ctx, self.s)
        if decision.verdict is Verdict.COMMAND:
            if decision.code == "nomination":
                return await self._nomination(ctx)
            if decision.code == "proof":
                return await self._proof(ctx)
            assert ctx.content is not None
            text = ctx.content.text
            if not text.strip() and ctx.content.subject:
                text = ctx.content.subject  # mailto:...?subject=help with an empty body
            return await self.commands(ctx, text)
        return await self._refused(ctx, decision)

    # -- commands --------------------------------------------------------------------

    async def commands(self, ctx: MailItem, text: str) -> Outcome:
        """Run every command line of a member's verified mail; answer them in one mail."""
        member, d, env = ctx.signer, ctx.decrypted, ctx.envelope
        assert member is not None and d is not None and d.signer is not None and env is not None
        if ctx.signature is not None:
            with self.s.store.transaction() as tx:
                record_signature(tx, d.signer, ctx.signature, ctx.item.id, time.time())
        lines, problems = mail_commands(text)
        parts = []
        for n, line in enumerate(lines):
            # Read again before each line: an earlier line may have changed the member
            # ("unsubscribe", "key update"), and the later ones run as what they are now.
            now = self.s.store.members.get(member.id)
            if now is None or not now.active or now.fingerprint != member.fingerprint:
                parts.append(f"! {len(lines) - n} more line(s) not run: the lines above "
                             "changed your membership or key")  # fmt: skip
                break
            # The signature by the member's registered key is what a trusted device is in
            # Matrix.
            actor = Actor(now.email, member=now, device_trusted=True)
            invocation = self._invocation(line, actor, env.source_id)
            if invocation.name == "key-update" and not invocation.body.strip():
                invocation = replace(invocation, body=await _attached_key(ctx))
            reply = await self.dispatcher.handle(invocation)
            mark = "" if reply.ok else "NOT DONE: "
            parts.append(f"> {line.text}\n{mark}{reply.text}")
        if not lines:
            problems.insert(0, "no command found; send 'help' for the list of commands")
        parts.extend(f"! {p}" for p in problems)
        received = datetime.fromtimestamp(ctx.item.received_at, UTC)
        answer = (
            f"Answers to your commands to {self.address}, received {received:%Y-%m-%d %H:%M} "
            f"UTC (the list's item {ctx.item.id}):\n\n" + "\n\n".join(parts) + "\n\n"
            "Commands go by mail signed with your key and encrypted to the list key, one per "
            "line; 'help' lists them. This is an automatic answer."
        )
        delivery = await self._answer(member, answer)
        return self._record(ctx.item, InboxState.COMMAND, "commands answered", [delivery])

    async def _resumed(self, item: InboxItem) -> Outcome | None:
        """Answer a command mail whose commands ran before the bot stopped, unanswered.

        Its signature was recorded for this item before its commands ran, so the replay
        check would refuse it now; running its commands again could double them. The
        audit log holds what it changed (the dispatcher's ref is the mail's Message-ID);
        the member is told that, and nothing is run."""
        signer = self.s.store.signatures.signer_of_item(item.id)
        if signer is None:
            return None
        try:
            ref = mime.parse_envelope(item.raw).source_id
        except mime.MalformedMail:  # pragma: no cover - it was read before it was recorded
            ref = item.source_id
        done = self.s.store.audit.all_by_ref(ref)
        changes = "".join(f"- {e.action} {e.target} (audit entry {e.seq})\n" for e in done)
        text = (
            f"The bot stopped while it handled your command mail to {self.address} (the "
            f"list's item {item.id}); its commands are not run again.\n\n"
            + (f"What it carried out:\n{changes}" if done else "It changed nothing.\n")
            + "\nLines not listed here changed nothing (help, or they were not reached): "
            "send them again in a new mail if you still need them. This is an automatic answer."
        )
        member = self.s.store.members.by_fingerprint(signer)
        if member is None:  # their key changed ("key update" ran): the admins tell them
            notice = self.notices.admins(
                f"Command mail {item.id} was interrupted by a stop of the bot; its signer "
                f"{signer} is no member's key now, so it was not answered.\n{text}"
            )
            return self._record(item, InboxState.COMMAND, "commands resumed", [notice])
        delivery = await self._answer(member, text)
        return self._record(item, InboxState.COMMAND, "commands resumed", [delivery])

    async def _answer(self, member: Member, text: str) -> NewDelivery:
        """The answer to a member's command mail, encrypted to them. Answers to the answer
        go to the request address again, never to the list."""
        return await self.mail.letter(
            to=member.email,
            subject="Answers to your commands",
            text=text,
            uid=new_uid(),
            encrypt_to=(member.fingerprint,),
            reply_to=self.address,
        )

    def _invocation(self, line: Line, actor: Actor, ref: str) -> Invocation:
        name, args = line.name, line.args
        two = _TWO_WORDS.get((name, args[0].lower())) if args else None
        if two is not None:
            name, args = two, args[1:]
        return Invocation(
            name=name,
            args=args,
            actor=actor,
            front=Front.EMAIL,
            text=line.text,
            body=line.body,
            encrypted=True,
            ref=ref,
        )

    # -- the procedure's mail ---------------------------------------------------------

    async def _nomination(self, ctx: MailItem) -> Outcome:
        env = ctx.envelope
        assert env is not None
        text = await request_steps.plain_text(ctx.decrypted.data if ctx.decrypted else ctx.item.raw)
        cc = tuple(mime.outer_recipients(ctx.item.raw, ("Cc",)))
        reply = await subscription.nomination_received(
            self.ctx, sender=env.from_addr, cc=cc, body=text, ref=env.source_id
        )
        code = parse_nomination(text).code
        case = self.s.store.cases.by_code(code) if code else None
        if case is not None:  # the code named a case: its contact gets the answer, no one else
            self._queue(
                SendMail(
                    to=(case.contact_email,),
                    subject=f"[{self.s.config.list.subject_tag}] your nomination for "
                    f".{case.tld} (case {case.label})",
                    body=reply.text,
                    reply_to=self.address,
                ),
                "case.nomination-answer",
            )
        return self._procedure(ctx, reply, "nomination", f"from {env.from_addr}")

    async def _proof(self, ctx: MailItem) -> Outcome:
        env = ctx.envelope
        assert env is not None
        signer: str | None
        if ctx.decrypted is not None:
            d = ctx.decrypted
            signer = d.signer if d.valid and d.signatures == 1 else None
            text = ctx.content.text if ctx.content else await request_steps.plain_text(d.data)
        else:
            signer, text = await self._signed_only(ctx.item.raw)
        challenges = set(CHALLENGE_PATTERN.findall(text.upper()))
        found = (
            self.s.store.cases.nominee_by_challenge(challenges.pop())
            if len(challenges) == 1
            else None
        )
        reply = subscription.proof_received(self.ctx, signer=signer, text=text, ref=env.source_id)
        if found is not None:  # the answer goes to the nominee's key, whoever signed
            case, nominee = found
            self._queue(
                SendMail(
                    to=(nominee.email,),
                    subject=f"[{self.s.config.list.subject_tag}] your key for .{case.tld} "
                    f"(case {case.label})",
                    body=reply.text,
                    encrypt_to=(nominee.fingerprint,),
                    reply_to=self.address,
                ),
                "case.proof-answer",
            )
        return self._procedure(ctx, reply, "proof", f"signed by {signer or 'no valid key'}")

    async def _signed_only(self, raw: bytes) -> tuple[str | None, str]:
        """The verified signer and the signed text of a signed-only mail (PGP/MIME or
        clear-signed inline); no signer when there is no valid signature."""
        try:
            content = await asyncio.to_thread(mime.parse_decrypted, raw)
        except mime.MalformedMail:
            return None, ""
        keyring = self.s.keyring
        if content.signed_part is None or content.signature is None:
            return await self._clearsigned(content.text)
        verified = await keyring.verify_detached(content.signed_part, content.signature)
        if not verified.valid and b"\r\n" not in content.signed_part:
            canonical = content.signed_part.replace(b"\n", b"\r\n")
            verified = await keyring.verify_detached(canonical, content.signature)
        return (verified.signer if verified.valid else None), content.text

    async def _clearsigned(self, text: str) -> tuple[str | None, str]:
        """Inline PGP, clear-signed: the signer, and only the text the signature covers."""
        try:
            block = mime.clearsigned_block(text.encode("utf-8"))
        except mime.MalformedMail:
            block = None
        if block is None:
            return None, text
        verified = await self.s.keyring.verify_clearsigned(block)
        if not verified.valid:
            return None, text
        return verified.signer, verified.data.decode("utf-8", "replace")

    def _procedure(self, ctx: MailItem, reply: Reply, what: str, who: str) -> Outcome:
        """Record a nomination or proof: answered when it changed the case, else refused
        (quarantined), the admins told either way when it was refused."""
        if reply.ok:
            return self._record(ctx.item, InboxState.COMMAND, f"{what} accepted", [])
        # Limited per sender like any refused mail: plain mail with a made-up code is easy
        # to send in bulk, and must not flood the control room.
        sender = ctx.envelope.from_addr if ctx.envelope else "?"
        notices = self.notices.admins_limited(
            f"notice:{sender}",
            f"A {what} on {self.address} ({who}; inbox item {ctx.item.id}) was refused: "
            f"{reply.text}",
            "refused mail from this sender",
        )
        return self._record(ctx.item, InboxState.REJECTED, f"{what}: {reply.text}", notices)

    def _queue(self, effect: SendMail, action: str) -> None:
        """An answer for someone who is not a member, queued with the command effects."""
        with self.s.store.transaction() as tx:
            self.s.store.effects.record(
                tx, [dumps(effect)], actor=SYSTEM_ACTOR, action=action, now=time.time()
            )

    # -- outcomes ---------------------------------------------------------------------

    async def _refused(self, ctx: MailItem, decision: Decision) -> Outcome:
        if decision.verdict is Verdict.DROP:
            return self._record(ctx.item, InboxState.DROPPED, decision.reason, [])
        rejected = await self.notices.mail_rejected(ctx, decision)
        return self._record(ctx.item, InboxState.REJECTED, decision.reason, rejected)

    def _record(
        self, item: InboxItem, state: InboxState, reason: str, deliveries: list[NewDelivery]
    ) -> Outcome:
        self.s.store.decide(item.id, state, reason, deliveries=deliveries)
        return Outcome(state, reason)


async def _attached_key(ctx: MailItem) -> str:
    """The public keys attached to the signed part for a ``key update`` line with no key
    pasted below it, one after the other; "" when there is none, and the command asks for
    the key. A key file is ``application/pgp-keys`` or named ``.asc`` (as Thunderbird
    attaches one), ``.gpg`` or ``.pgp``; a binary one (``gpg --export``) is armoured by gpg.
    Thunderbird may attach the sender's current key too: ``key update`` sets it aside."""
    if ctx.decrypted is None:
        return ""
    # The list skips key files when it relays a post (``skipped_types``); here they count.
    # Everything the member's signature covers is read: the decrypted data is signed whole.
    entity = parse_bounded(ctx.decrypted.data)
    keys = []
    for f in walk(entity, AttachmentLimits(skipped_types=())).attachments:
        named = f.filename.lower().endswith((".asc", ".gpg", ".pgp"))
        if f.content_type != "application/pgp-keys" and not named:
            continue
        if b"-----BEGIN PGP " in f.data:
            keys.append(f.data.decode("ascii", "replace"))
        elif text := await armor_keys(f.data):
            keys.append(text)
    return "\n".join(keys)
