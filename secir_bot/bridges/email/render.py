"""Posts and answers as the list's mail: PGP/MIME, signed by the list key, encrypted.

Rendered at decision time, once per post: the members are split into recipient groups of
at most ``delivery.encrypt_group_size`` (``crypto.groups``), each group's mail signed and
encrypted once (key ids hidden unless ``crypto.hide_recipients`` is off), the groups on
every core at once; each group's mail is one outbox row's bytes, stored once, so that a
retry sends exactly the same mail. Every group's mail has the post's Message-ID. The real
subject and sender travel inside the encryption (protected headers, ``mime.compose``); the
list headers go outside.
"""

from __future__ import annotations

import functools
import html
from collections.abc import AsyncIterator, Callable, Sequence
from email.message import EmailMessage
from typing import Any

from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.crypto.backend import SignEncrypt
from secir_bot.crypto.groups import make_backend, sign_encrypt_each, sign_encrypt_groups
from secir_bot.fidelity.mailparts import OutgoingFile, mail_body
from secir_bot.fidelity.relations import correction_text
from secir_bot.fidelity.totext import html_alternative
from secir_bot.mime import ListHeaders, compose_inner, compose_outer
from secir_bot.mime.letter import Part, compose_signed, letter_inner
from secir_bot.model import Channel, DeliveryKind, LinkKind, Member, Post, message_id, new_uid
from secir_bot.store import NewDelivery, Store

LIST_TARGET = "list"  # the outbox target of the list's own mail (one row, many recipients)


class EmailRenderer:
    """The ``MailRenderer`` of the email channel (see ``bridges/__init__.py``)."""

    channel = Channel.EMAIL

    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: Keyring,
        list_fpr: str,
        backend: SignEncrypt | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.list_fpr = list_fpr
        self.backend = backend or make_backend(
            config.crypto.backend, keyring, hide_recipients=config.crypto.hide_recipients
        )
        self.group_size = config.delivery.encrypt_group_size
        self.domain = config.list.domain
        self.html_alternative = config.list.html_alternative
        lst = config.list
        self.headers = ListHeaders(
            name=lst.name,
            address=lst.address,
            list_id=lst.list_id,
            owner=lst.owner,
            tag=lst.subject_tag,
        )

    def message_id(self, uid: str) -> str:
        return message_id(uid, self.domain)

    async def aclose(self) -> None:
        """Stop the backend's workers (Sequoia's processes; nothing for gpg)."""
        await self.backend.aclose()

    async def post(self, post: Post, to: Sequence[Member]) -> list[NewDelivery]:
        return [row async for row in self.post_each(post, to)]

    async def post_each(self, post: Post, to: Sequence[Member]) -> AsyncIterator[NewDelivery]:
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
        body = post.body
        if post.corrects:
            # Mail cannot be edited: the whole corrected text, in the original's thread.
            where = "by email" if post.origin is Channel.EMAIL else "in the Matrix room"
            body = correction_text(post.author.label, post.body, where)
        sealed = self._encrypt_each(
            entity=self._body(post, notes + body + footer, footer),
            subject=post.subject,
            text=notes + body + footer,
            label=post.author.label,
            message_id=self.message_id(post.uid),
            to=[m.fingerprint for m in to],
            in_reply_to=in_reply_to,
            references=refs,
        )
        row = _list_rows(to, DeliveryKind.POST, post.uid)
        # Each row as soon as its group is encrypted.
        async for group, data in sealed:
            yield row(group, data)

    async def answer(self, member: Member, subject: str, text: str) -> NewDelivery:
        ((_, data),) = await self._encrypt(
            subject=subject,
            text=text,
            label=None,
            message_id=self.message_id(new_uid()),
            to=[member.fingerprint],
            automated=True,
            recipient=member.email,
        )
        return NewDelivery(
            channel=Channel.EMAIL,
            target=member.email,
            kind=DeliveryKind.NOTICE,
            payload=data,
            recipients=(member.email,),
        )

    async def letter(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        uid: str,
        encrypt_to: Sequence[str] = (),
        attachments: Sequence[Part] = (),
        reply_to: str = "",
    ) -> NewDelivery:
        """A command's mail to one address: encrypted to ``encrypt_to`` and signed, or, with
        no key to encrypt to, signed only. ``uid`` fixes its Message-ID (a retry or a
        repeated effect is the same mail)."""
        mid = self.message_id(uid)
        inner = letter_inner(
            subject=subject,
            text=text,
            attachments=attachments,
            lists=self.headers,
            to=to,
            message_id=mid,
            reply_to=reply_to,
        )
        if encrypt_to:
            armored = await self.keyring.sign_encrypt(inner, list(encrypt_to), self.list_fpr)
            data = compose_outer(
                armored=armored,
                from_label=None,
                lists=self.headers,
                message_id=mid,
                to=to,
                automated=True,
                reply_to=reply_to,
            )
        else:
            signature = await self.keyring.detach_sign(inner, self.list_fpr, digest="SHA256")
            data = compose_signed(
                inner=inner,
                signature=signature,
                subject=subject,
                lists=self.headers,
                to=to,
                message_id=mid,
                reply_to=reply_to,
            )
        return NewDelivery(
            channel=Channel.EMAIL, target=to, kind=DeliveryKind.NOTICE, payload=data,
            recipients=(to,),
        )  # fmt: skip

    async def announcement(
        self, to: Sequence[Member], subject: str, text: str, uid: str
    ) -> list[NewDelivery]:
        """A notice from the list to its members (a new member, a removal): one mail, signed
        and encrypted once per recipient group of ``to`` (as a post), in order with the
        list's posts."""
        sealed = await self._encrypt(
            subject=subject,
            text=text,
            label=None,
            message_id=self.message_id(uid),
            to=[m.fingerprint for m in to],
        )
        row = _list_rows(to, DeliveryKind.NOTICE)
        return [row(group, data) for group, data in sealed]

    def _body(self, post: Post, text: str, footer: str) -> EmailMessage | None:
        """The post's MIME body when it has more than its text: its files, and the HTML
        alternative (``list.html_alternative``) of a room post written with formatting,
        sanitised, mentions written as "Name (.tld)"; None for the plain text alone."""
        page = None
        if self.html_alternative and post.formatted and post.origin is Channel.MATRIX:

            def label(user_id: str) -> str | None:
                member = self.store.members.by_matrix_id(user_id)
                return member.label if member is not None else None

            notes = "".join(
                f"<p><em>[Note from the list: {html.escape(n)}]</em></p>" for n in post.notes
            )
            lines = "<br>\n".join(html.escape(ln) for ln in footer.strip("\n").split("\n"))
            page = notes + html_alternative(post.formatted, label) + f"<p>{lines}</p>"
        if page is None and not post.files:
            return None
        files = [OutgoingFile(f.filename, f.content_type, f.data) for f in post.files]
        return mail_body(text, html=page, files=files)

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
            for mid in self.store.posts.links_of(uid, LinkKind.MSGID)
            if mid != ours and mid.isascii() and mid.isprintable() and len(mid) <= 250
        ]

    async def _encrypt(self, to: list[str], **kw: Any) -> list[tuple[tuple[str, ...], bytes]]:
        """The mail for each recipient group of ``to`` (fingerprints): (group, bytes), all
        or none (``sign_encrypt_groups``)."""
        inner, outer = self._compose(**kw)
        sealed = await sign_encrypt_groups(
            self.backend, inner, to, self.list_fpr, group_size=self.group_size
        )
        return [(s.recipients, outer(armored=s.armored)) for s in sealed]

    async def _encrypt_each(
        self, to: list[str], **kw: Any
    ) -> AsyncIterator[tuple[tuple[str, ...], bytes]]:
        """Each group's (group, bytes) as soon as it is encrypted (``sign_encrypt_each``)."""
        inner, outer = self._compose(**kw)
        async for s in sign_encrypt_each(
            self.backend, inner, to, self.list_fpr, group_size=self.group_size
        ):
            yield s.recipients, outer(armored=s.armored)

    def _compose(
        self,
        *,
        subject: str,
        text: str,
        label: str | None,
        message_id: str,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        automated: bool = False,
        recipient: str | None = None,
        entity: EmailMessage | None = None,
    ) -> tuple[bytes, Callable[..., bytes]]:
        """The inner message to encrypt, and the outer mail to put each ciphertext in."""
        inner = compose_inner(
            subject=subject,
            text=text,
            from_label=label,
            lists=self.headers,
            message_id=message_id,
            entity=entity,
        )
        outer = functools.partial(
            compose_outer,
            from_label=label,
            lists=self.headers,
            message_id=message_id,
            to=recipient or self.headers.address,
            in_reply_to=in_reply_to,
            references=references,
            reply=bool(in_reply_to),
            automated=automated,
        )
        return inner, outer


def _list_rows(
    to: Sequence[Member], kind: DeliveryKind, post_uid: str | None = None
) -> Callable[[tuple[str, ...], bytes], NewDelivery]:
    """The outbox row of one recipient group's mail (its fingerprints), addressed to the
    members of ``to`` that hold those keys. Every group's row has the same target: the
    outbox sends them in order, after every earlier list mail."""
    emails: dict[str, list[str]] = {}
    for m in to:
        emails.setdefault(m.fingerprint, []).append(m.email)

    def row(group: tuple[str, ...], data: bytes) -> NewDelivery:
        return NewDelivery(
            channel=Channel.EMAIL,
            target=LIST_TARGET,
            kind=kind,
            payload=data,
            recipients=tuple(e for fpr in group for e in emails[fpr]),
            post_uid=post_uid,
        )

    return row
