"""From a decision to durable work: posts, thread links and outbox rows.

``Processor`` runs an inbox item through its pipeline stage and records the outcome in one
store transaction: an accepted item becomes a ``Post`` plus one outbox row per
destination; a rejected one becomes a control-room notice and, for a member, an encrypted
explanation. Email fan-out is composed here, once per post: one signature and one
encryption to all recipients, whatever their number.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import time
import traceback
from datetime import UTC, datetime

from secir_bot import mime
from secir_bot.crypto import GpgTimeout
from secir_bot.model import (
    MARKER,
    Channel,
    DeliveryKind,
    InboxState,
    LinkKind,
    Member,
    Outcome,
    Post,
)
from secir_bot.pipeline import EMAIL_STEPS, MATRIX_STEPS
from secir_bot.steps import Decision, MailItem, MatrixItem, Services, Verdict
from secir_bot.store import InboxItem, NewDelivery, Rate
from secir_bot.threads import (
    REPLY_PREFIX,
    clean_subject,
    first_line,
    is_placeholder,
    mail_subject,
    place_mail,
)

__all__ = ["Outcome", "Processor", "clean_subject", "first_line", "is_placeholder"]

log = logging.getLogger(__name__)

ROOM_TEXT_LIMIT = 16_000  # characters of a mail shown in the room (body + HTML + encryption)
MAX_ATTEMPTS = 3  # times an item may be started before it is shunted unprocessed
RATE_WINDOW = 3600.0  # seconds over which delivery.notices_per_hour is counted
_RE = REPLY_PREFIX


def new_uid() -> str:
    return secrets.token_hex(10)


class Processor:
    """Decides inbox items and turns them into posts and deliveries."""

    def __init__(self, services: Services) -> None:
        self.s = services
        lst = services.config.list
        self.headers = mime.ListHeaders(
            name=lst.name,
            address=lst.address,
            list_id=lst.list_id,
            owner=lst.owner,
            tag=lst.subject_tag,
        )

    def message_id(self, uid: str) -> str:
        return f"<{uid}@{self.s.config.list.domain}>"

    # -- items -------------------------------------------------------------------------

    async def process(self, item: InboxItem) -> Outcome:
        """Decide one inbox item (idempotent: a decided item keeps its outcome).

        An item whose processing raises is *shunted*: kept in the store with the error,
        reported to the admins, and not retried automatically, so that one poisonous
        message cannot stop the list (Mailman's shunt queue).
        """
        if item.state != InboxState.NEW:
            return Outcome(item.state, item.reason or "")
        # Counted before the work: an item that kills or hangs the process (rather than
        # raising) is set aside after a few restarts instead of stopping the list for ever.
        attempts = self.s.store.begin_attempt(item.id)
        if attempts > MAX_ATTEMPTS:
            return self._shunt(
                item,
                f"processing did not finish in {MAX_ATTEMPTS} attempts "
                "(the bot stopped or hung while handling it)",
            )
        try:
            if item.source == Channel.EMAIL:
                return await self._process_mail(item)
            return await self._process_matrix(item)
        except GpgTimeout as exc:
            # gpg hung on this item (and was killed): set it aside now rather than let the
            # next item wait behind it again.
            log.error("inbox item %s: gpg did not finish; shunted", item.id)
            return self._shunt(item, str(exc))
        except Exception as exc:
            # Type and place only: an exception's text may quote what was being parsed
            # (decrypted content), which belongs neither in logs nor in notices.
            log.error(
                "inbox item %s could not be processed (%s); shunted\n%s",
                item.id,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return self._shunt(item, f"internal error ({type(exc).__name__})")

    def _shunt(self, item: InboxItem, reason: str) -> Outcome:
        """Set an item aside: kept with its reason, reported, never relayed (Mailman's shunt)."""
        notice = self.notice(
            f"Inbox item {item.id} ({item.source} {item.source_id}) could not be "
            f"processed and was set aside: {reason}. Nothing was relayed."
        )
        self.s.store.decide(item.id, InboxState.SHUNTED, reason, deliveries=[notice])
        return Outcome(InboxState.SHUNTED, reason)

    def _settle(self, item: InboxItem, decision: Decision, rejected: list[NewDelivery]) -> Outcome:
        """Record a drop or a rejection (with its notices) as the item's outcome."""
        if decision.verdict is Verdict.DROP:
            self.s.store.decide(item.id, InboxState.DROPPED, decision.reason)
            return Outcome(InboxState.DROPPED, decision.reason)
        self.s.store.decide(item.id, InboxState.REJECTED, decision.reason, deliveries=rejected)
        return Outcome(InboxState.REJECTED, decision.reason)

    async def _process_mail(self, item: InboxItem) -> Outcome:
        ctx = MailItem(item)
        decision = await EMAIL_STEPS.run(ctx, self.s)
        if decision.verdict is not Verdict.CONTINUE:
            rejected = (
                [] if decision.verdict is Verdict.DROP else await self._mail_rejected(ctx, decision)
            )
            return self._settle(item, decision, rejected)
        assert ctx.signer is not None and ctx.envelope is not None and ctx.content is not None
        env, content = ctx.envelope, ctx.content
        place = place_mail(self.s.store, content, env, ctx.signer)
        parent = place.parent
        post = Post(
            uid=new_uid(),
            origin=Channel.EMAIL,
            author=ctx.signer,
            subject=mail_subject(content, place, self.s.config.list.subject_tag),
            body=content.text,
            parent_uid=parent.uid if parent else None,
            root_uid=(parent.root_uid or parent.uid) if parent else None,
            attachments=content.attachments,
            notes=(*ctx.notes, *place.notes),
        )
        deliveries = [self._to_room(post), *await self._to_list(post)]
        links = [(LinkKind.MSGID, env.source_id), (LinkKind.MSGID, self.message_id(post.uid))]
        signature = (ctx.signer.fingerprint, ctx.signature) if ctx.signature else None
        self.s.store.decide(
            item.id,
            InboxState.RELAYED,
            post=post,
            links=links,
            deliveries=deliveries,
            signature=signature,
        )
        return Outcome(InboxState.RELAYED)

    async def _process_matrix(self, item: InboxItem) -> Outcome:
        ctx = MatrixItem(item)
        decision = await MATRIX_STEPS.run(ctx, self.s)
        if decision.verdict is not Verdict.CONTINUE:
            rejected = (
                [] if decision.verdict is Verdict.DROP else self._matrix_rejected(ctx, decision)
            )
            return self._settle(item, decision, rejected)
        assert ctx.sender is not None
        content = ctx.event.get("content") or {}
        rel = content.get("m.relates_to") or {}
        parent = root = None
        reply_to = (rel.get("m.in_reply_to") or {}).get("event_id")
        if reply_to:
            parent = self.s.store.post_for(LinkKind.EVENT, str(reply_to))
        if rel.get("rel_type") == "m.thread" and rel.get("event_id"):
            root = self.s.store.post_for(LinkKind.EVENT, str(rel["event_id"]))
            if parent is None or rel.get("is_falling_back"):
                parent = parent or root
        if parent is not None and root is None:
            root = self.s.store.post(parent.root_uid) if parent.root_uid else parent
        body = strip_reply_fallback(str(content.get("body", "")))
        if content.get("msgtype") == "m.emote":
            body = f"* {ctx.sender.name} {body}"
        if root is not None:
            subject = "Re: " + _RE.sub("", self._root_subject(root))
        else:
            subject = first_line(body)
        post = Post(
            uid=new_uid(),
            origin=Channel.MATRIX,
            author=ctx.sender,
            subject=subject,
            body=body,
            parent_uid=parent.uid if parent else None,
            root_uid=root.uid if root else None,
        )
        links = [
            (LinkKind.EVENT, str(ctx.event.get("event_id"))),
            (LinkKind.MSGID, self.message_id(post.uid)),
        ]
        self.s.store.decide(
            item.id,
            InboxState.RELAYED,
            post=post,
            links=links,
            deliveries=await self._to_list(post),
        )
        return Outcome(InboxState.RELAYED)

    def _root_subject(self, post: Post) -> str:
        root = self.s.store.post(post.root_uid) if post.root_uid else post
        return (root or post).subject

    # -- destinations ------------------------------------------------------------------

    def _to_room(self, post: Post) -> NewDelivery:
        text = post.body
        if len(text) > ROOM_TEXT_LIMIT:
            # A Matrix event holds at most 64 KiB; the whole text still goes out by mail.
            text = text[:ROOM_TEXT_LIMIT] + "\n\n[… truncated here; the full text went out by mail]"
        if post.attachments:
            text += "\n\n[attachments not relayed: " + ", ".join(post.attachments) + "]"
        head = f"{post.author.label} by email"
        notes = "".join(f"[{note}]\n" for note in post.notes)
        body = f"{head}: {post.subject}\n{notes}\n{text}"
        formatted = (
            f"<p><strong>{html.escape(post.author.label)}</strong> by email: "
            f"<strong>{html.escape(post.subject)}</strong></p>"
            + "".join(f"<p><em>{html.escape(note)}</em></p>" for note in post.notes)
            + f"<pre>{html.escape(text)}</pre>"
        )
        content = {
            "msgtype": "m.text",
            "body": body,
            "format": "org.matrix.custom.html",
            "formatted_body": formatted,
            "m.mentions": {},
            MARKER: {"post": post.uid, "from": "email"},
        }
        payload = {"content": content, "root_uid": post.root_uid, "parent_uid": post.parent_uid}
        return NewDelivery(
            channel=Channel.MATRIX,
            target=self.s.config.matrix.incident_room,
            kind=DeliveryKind.POST,
            payload=json.dumps(payload).encode(),
            post_uid=post.uid,
        )

    def email_recipients(self, exclude: Member | None) -> list[Member]:
        return [
            m
            for m in self.s.store.members()
            if Channel.EMAIL in m.channels
            and (exclude is None or m.id != exclude.id or self.s.config.list.echo_to_sender)
        ]

    async def _to_list(self, post: Post) -> list[NewDelivery]:
        members = self.email_recipients(post.author)
        out: list[NewDelivery] = []
        usable = await self.s.keyring.usable_for_encryption([m.fingerprint for m in members])
        skipped = [m for m in members if m.fingerprint not in usable]
        if skipped:
            members = [m for m in members if m.fingerprint in usable]
            out.append(
                self.notice(
                    "Not mailed to "
                    + ", ".join(f"{m.label} <{m.email}>" for m in skipped)
                    + f" (post {post.uid}): their key is expired, revoked or cannot encrypt."
                )
            )
        if not members:
            return out
        in_reply_to, refs = self._thread_ids(post)
        if post.origin is Channel.MATRIX:
            # Matrix posts carry no OpenPGP signature: say what the list did check.
            checked = (
                "in the Matrix room, end-to-end encrypted, from a Matrix device that the "
                "list trusts for them"
            )
        else:
            checked = "by email; the list checked their OpenPGP signature"
        footer = (
            f"\n\n-- \n{post.author.label} <{post.author.email}> wrote this {checked}."
            f"\nReply to this mail to answer everyone on {self.headers.name}, by mail and in "
            f"the Matrix room."
        )
        if post.attachments:
            footer = "\n\n[attachments not relayed: " + ", ".join(post.attachments) + "]" + footer
        notes = "".join(f"[Note from the list: {note}]\n\n" for note in post.notes)
        data = await self._encrypt(
            subject=post.subject,
            text=notes + post.body + footer,
            label=post.author.label,
            message_id=self.message_id(post.uid),
            to=[m.fingerprint for m in members],
            in_reply_to=in_reply_to,
            references=refs,
        )
        out.append(
            NewDelivery(
                channel=Channel.EMAIL,
                target="list",
                kind=DeliveryKind.POST,
                payload=data,
                recipients=tuple(m.email for m in members),
                post_uid=post.uid,
            )
        )
        return out

    def _thread_ids(self, post: Post) -> tuple[str | None, tuple[str, ...]]:
        """In-Reply-To and References of a reply's mail (issue 6, found with real clients).

        Beside the list's own Message-IDs of the thread's root and of the parent, the ids
        that their authors' own mails had: a member who wrote the parent by mail never got
        the list's copy of it (no echo), so their client threads the answer by their own id.
        """
        if not post.parent_uid:
            return None, ()
        root_uid = post.root_uid or post.parent_uid
        refs: list[str] = []
        for uid in dict.fromkeys((root_uid, post.parent_uid)):
            for mid in (self.message_id(uid), *self._original_ids(uid)):
                if mid not in refs:
                    refs.append(mid)
        # References end with the parent; In-Reply-To names the list's copy (one id, as
        # clients expect), the author's own id being in References for their client.
        return self.message_id(post.parent_uid), tuple(refs)

    def _original_ids(self, uid: str) -> list[str]:
        """The Message-IDs a post had before the list relayed it (its author's own), as far
        as they are plain, short ids that a header can carry."""
        ours = self.message_id(uid)
        return [
            mid
            for mid in self.s.store.links_of(uid, LinkKind.MSGID)
            if mid != ours and mid.isascii() and mid.isprintable() and len(mid) <= 250
        ]

    async def _encrypt(
        self,
        *,
        subject: str,
        text: str,
        label: str | None,
        message_id: str,
        to: list[str],
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        automated: bool = False,
        recipient: str | None = None,
    ) -> bytes:
        inner = mime.compose_inner(
            subject=subject, text=text, from_label=label, lists=self.headers, message_id=message_id
        )
        armored = await self.s.keyring.sign_encrypt(inner, to, self.s.list_fpr)
        return mime.compose_outer(
            armored=armored,
            from_label=label,
            lists=self.headers,
            message_id=message_id,
            to=recipient or self.headers.address,
            in_reply_to=in_reply_to,
            references=references,
            reply=bool(in_reply_to),
            automated=automated,
        )

    # -- rejections --------------------------------------------------------------------

    def notice(self, text: str) -> NewDelivery:
        """A notice for the admins in the control room."""
        content = {"msgtype": "m.notice", "body": text, "m.mentions": {}}
        return NewDelivery(
            channel=Channel.MATRIX,
            target=self.s.config.matrix.control_room,
            kind=DeliveryKind.NOTICE,
            payload=json.dumps({"content": content}).encode(),
        )

    def _rate(self, key: str) -> Rate:
        return self.s.store.rate(
            key, self.s.config.delivery.notices_per_hour, RATE_WINDOW, time.time()
        )

    def _limited(self, key: str, text: str, kind: str) -> list[NewDelivery]:
        """A notice for the admins, unless too many about ``key`` went out this hour."""
        rate = self._rate(key)
        return (
            [self.notice(text + _held_note(rate, f"notices about {kind}"))] if rate.allowed else []
        )

    async def _mail_rejected(self, ctx: MailItem, decision: Decision) -> list[NewDelivery]:
        """A notice for the admins, and an answer to the sender only when a valid signature
        proved who that is: a forged From gets nothing, and the answer (which the list
        signs) quotes nothing the sender chose, only the reason and our own item id."""
        env = ctx.envelope
        sender = env.from_addr if env else mime.from_address(ctx.item.raw) or "(unreadable)"
        mid = env.message_id if env and env.message_id else ctx.item.source_id
        signer = f"; signed by {ctx.signer.label}" if ctx.signer else ""
        who = ctx.signer.fingerprint if ctx.signer else sender.lower()
        out = self._limited(
            f"notice:{who}",
            f"Mail rejected and quarantined: {decision.reason}. "
            f"From: {mime.neutral(sender)[:200]}{signer}; "
            f"Message-ID: {mime.neutral(mid)[:200]}; inbox item {ctx.item.id}.",
            "refused mail from this sender",
        )
        member = ctx.signer
        if (
            member is None
            or not member.active
            or not await self.s.keyring.usable_for_encryption([member.fingerprint])
        ):
            return out
        rate = self._rate(f"answer:{member.fingerprint}")
        if rate.allowed:
            received = datetime.fromtimestamp(ctx.item.received_at, UTC)
            text = (
                f"Your mail to {self.headers.address} received on "
                f"{received:%Y-%m-%d %H:%M} UTC (the list's item {ctx.item.id}) was not "
                f"relayed to the list:\n\n    {decision.reason}.\n\nNothing was sent to the "
                f"other members. Mail to the list must be encrypted to the list key and "
                f"signed with the key registered for you ({member.fingerprint}).\nThe list "
                f"admins have been told. This is an automatic answer."
                + _held_note(rate, "answers like this one")
            )
            data = await self._encrypt(
                subject="Your mail was not relayed",
                text=text,
                label=None,
                message_id=self.message_id(new_uid()),
                to=[member.fingerprint],
                automated=True,
                recipient=member.email,
            )
            out.append(
                NewDelivery(
                    channel=Channel.EMAIL,
                    target=member.email,
                    kind=DeliveryKind.NOTICE,
                    payload=data,
                    recipients=(member.email,),
                )
            )
        return out

    def _matrix_rejected(self, ctx: MatrixItem, decision: Decision) -> list[NewDelivery]:
        event_id = ctx.event.get("event_id", "?")
        sender = ctx.event.get("sender", "?")
        out = self._limited(
            f"notice:{sender}",
            f"Matrix event not relayed: {decision.reason}. Sender: {sender}; "
            f"event: {event_id}; room: {ctx.room_id}.",
            "refused messages from this sender",
        )
        if (
            ctx.room_id
            and ctx.room_id != self.s.config.matrix.control_room
            and self._rate(f"answer:{sender}").allowed
        ):
            relation: dict[str, object] = {"m.in_reply_to": {"event_id": event_id}}
            thread = (ctx.event.get("content") or {}).get("m.relates_to") or {}
            if isinstance(thread, dict) and thread.get("rel_type") == "m.thread":
                # An answer to a message in a thread belongs in that thread (issue 6).
                relation.update(
                    rel_type="m.thread", event_id=thread.get("event_id"), is_falling_back=True
                )
            content = {
                "msgtype": "m.notice",
                "m.mentions": {},
                "body": f"Not mirrored to the mailing list: {decision.reason}.",
                "m.relates_to": relation,
            }
            out.append(
                NewDelivery(
                    channel=Channel.MATRIX,
                    target=ctx.room_id,
                    kind=DeliveryKind.NOTICE,
                    payload=json.dumps({"content": content}).encode(),
                )
            )
        return out


def _held_note(rate: Rate, what: str) -> str:
    """What a rate-limited notice adds: how many were held back, and when more will be."""
    note = ""
    if rate.held_before:
        note += f" ({rate.held_before} more {what} were held back in the hour before.)"
    if rate.last:
        note += f" Further {what} are held back for an hour and counted."
    return note


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted ``> <@user> ...`` fallback that older clients put before replies."""
    lines = body.split("\n")
    if lines and lines[0].startswith("> <"):
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
    return "\n".join(lines)
