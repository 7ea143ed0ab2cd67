"""Steps for mail received on the list address.

Envelope checks (loops, auto-replies, encryption present) run before any decryption;
sender policy runs only on a verified signature. The signing key identifies the sender,
never the From header.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace

from secir_bot import mime
from secir_bot.crypto import Decrypted, Verified
from secir_bot.fidelity.attachments import check_all
from secir_bot.fidelity.fromhtml import html_to_matrix
from secir_bot.fidelity.relations import parse_correction
from secir_bot.model import Channel, File, Inbound, LinkKind
from secir_bot.steps import CONTINUE, Decision, MailItem, Services, drop, reject
from secir_bot.threads import UNADDRESSED_NOTE


async def size_limit(ctx: MailItem, s: Services) -> Decision:
    """First, before anything parses the mail: the size the server reported (a larger
    mail was not even fetched, only its header) and the size of the bytes we hold."""
    limit = s.config.list.max_message_bytes
    size = max(len(ctx.item.raw), ctx.facts.size)
    if size > limit or ctx.facts.headers_only:
        return reject("too-large", limit=limit)
    return CONTINUE


async def parse(ctx: MailItem, s: Services) -> Decision:
    try:
        # Off the event loop: parsing a large or convoluted mail takes a while.
        ctx.envelope = await asyncio.to_thread(mime.parse_envelope, ctx.item.raw)
    except mime.MalformedMail as exc:
        # Still try to name the sender, so that a member learns why nothing happened.
        ctx.claimed = s.store.members.by_email(mime.from_address(ctx.item.raw))
        return reject("unreadable", why=str(exc))
    ctx.claimed = s.store.members.by_email(ctx.envelope.from_addr)
    return CONTINUE


async def not_a_loop(ctx: MailItem, s: Services) -> Decision:
    env = ctx.envelope
    assert env is not None
    own = s.config.list.list_id
    if env.loop_marker == own or (env.list_id and f"<{own}>" in env.list_id):
        return drop("own-mail")
    if env.from_addr == s.config.list.address.lower():
        return drop("from-list-address")
    return CONTINUE


async def not_automated(ctx: MailItem, s: Services) -> Decision:
    assert ctx.envelope is not None
    if ctx.envelope.automated:
        return drop("automated", why=ctx.envelope.automated)
    return CONTINUE


async def encrypted(ctx: MailItem, s: Services) -> Decision:
    assert ctx.envelope is not None
    if ctx.envelope.ciphertext is None:
        if ctx.envelope.kind == "signed-only":
            return reject("signed-not-encrypted")
        return reject("not-encrypted")
    return CONTINUE


async def decrypt(ctx: MailItem, s: Services) -> Decision:
    """Decrypt, verify, and keep as content only what gpg reported as signed.

    The content is set only when a signature was found and checked; what is shown later
    is derived from the bytes gpg verified, never from a second reading of the input.
    """
    env = ctx.envelope
    assert env is not None and env.ciphertext is not None
    # The decrypted size is bounded too: compression can turn kilobytes into gigabytes.
    result = await s.keyring.decrypt(
        env.ciphertext, DECRYPTED_FACTOR * s.config.list.max_message_bytes
    )
    if not result.ok:
        return reject("undecryptable", status=result.status)
    ctx.decrypted = result
    if env.kind == "inline":
        return await _inline(ctx, s, result)
    try:
        # Parsing a large entity takes a while: keep it off the event loop.
        content = await asyncio.to_thread(mime.parse_decrypted, result.data)
    except mime.MalformedMail as exc:
        return reject("unreadable-content", why=str(exc))
    if result.signed:
        if content.signature is not None:
            return reject("two-signatures")  # signed inside and around: say which counts
        # gpg's signature covers all of result.data, which the content was read from.
        ctx.content = content if result.valid else None
    elif content.signed_part is not None and content.signature is not None:
        # Signed, then encrypted as separate layers (RFC 3156 §6.1): the signature covers
        # exactly the signed part's bytes, and the content was read from them alone.
        verified = await s.keyring.verify_detached(content.signed_part, content.signature)
        if not verified.valid and b"\r\n" not in content.signed_part:
            canonical = content.signed_part.replace(b"\n", b"\r\n")
            verified = await s.keyring.verify_detached(canonical, content.signature)
        ctx.decrypted = _with_signature(result, verified, content.signature)
        ctx.content = content if verified.valid else None
    return CONTINUE


async def _inline(ctx: MailItem, s: Services, result: Decrypted) -> Decision:
    if result.signed:
        # Signed and encrypted in one: gpg's output is the signed literal data.
        ctx.content = mime.inline_content(result.data) if result.valid else None
        return CONTINUE
    try:
        block = mime.clearsigned_block(result.data)
    except mime.MalformedMail as exc:
        return reject("malformed", why=str(exc))
    if block is not None:
        # Clear-signed, then encrypted: gpg verifies the block and writes out the text
        # that its signature covers; that text, and nothing else, is the content.
        verified = await s.keyring.verify_clearsigned(block)
        ctx.decrypted = _with_signature(result, verified, block)
        ctx.content = mime.inline_content(verified.data) if verified.valid else None
    return CONTINUE


def _with_signature(result: Decrypted, verified: Verified, signature: bytes) -> Decrypted:
    sig_id = verified.signature_id or "sha256:" + hashlib.sha256(signature).hexdigest()
    return replace(
        result,
        signed=verified.signatures > 0,
        signatures=verified.signatures,
        status=verified.status,
        valid=verified.valid,
        signer=verified.signer,
        signature_id=sig_id,
        signed_at=verified.signed_at,
    )


async def signed(ctx: MailItem, s: Services) -> Decision:
    d = ctx.decrypted
    assert d is not None
    if not d.signed:
        return reject("not-signed")
    if d.signatures > 1:
        return reject("two-signatures")
    if not d.valid or d.signer is None or ctx.content is None:
        return reject("bad-signature", status=d.status or "bad signature")
    return CONTINUE


async def signer_is_member(ctx: MailItem, s: Services) -> Decision:
    d = ctx.decrypted
    assert d is not None and d.signer is not None
    member = s.store.members.by_fingerprint(d.signer)
    if member is None:
        return reject("signer-not-member", key=d.signer)
    if not member.active:
        return reject("signer-inactive", status=member.status)
    ctx.signer = member
    return CONTINUE


async def not_a_replay(ctx: MailItem, s: Services) -> Decision:
    """The same signature is accepted once, only while it is recent, and not when it is
    dated in the future (which would stretch its window of use).

    Someone who captured a member's signed mail cannot send it again (with a new
    Message-ID, or a new cleartext Subject) to have it relayed a second time.
    """
    d = ctx.decrypted
    assert d is not None and d.signer is not None
    ctx.signature = d.signature_id or "sha256:" + hashlib.sha256(d.data).hexdigest()
    if s.store.signatures.seen(d.signer, ctx.signature):
        return reject("replayed")
    skew = s.config.list.max_clock_skew
    if d.signed_at is not None and d.signed_at > time.time() + skew:
        minutes = (d.signed_at - time.time()) / 60
        return reject("signed-in-future", minutes=minutes, skew=skew)
    max_age = s.config.list.max_signature_age_days * 86400
    if d.signed_at is not None and d.signed_at < time.time() - max_age:
        days = (time.time() - d.signed_at) / 86400
        return reject("signature-too-old", days=days, max_days=s.config.list.max_signature_age_days)
    return CONTINUE


async def from_not_another_member(ctx: MailItem, s: Services) -> Decision:
    """The signing key says who wrote a mail; its From may be any address of theirs (a
    personal or a role address), but never another member's, in the signed headers or
    outside them: that would show one member's words under another's address."""
    assert ctx.signer is not None and ctx.envelope is not None and ctx.content is not None
    signed_from = ctx.content.from_addr
    inner = s.store.members.by_email(signed_from) if signed_from else None
    if inner is not None and inner.id != ctx.signer.id:
        return reject("signed-from-other-member", email=ctx.signer.email)
    if ctx.claimed is not None and ctx.claimed.id != ctx.signer.id:
        return reject("from-other-member", email=ctx.signer.email)
    return CONTINUE


async def addressed_to_list(ctx: MailItem, s: Services) -> Decision:
    """Surreptitious forwarding: a member's signed mail to someone else, encrypted to the
    list key by whoever got it, must not become a post (signing does not bind recipients).

    When the signed headers name recipients, the list must be one of them; when they name
    none (inline PGP, clients without protected headers), the post is marked.
    """
    assert ctx.content is not None
    recipients = ctx.content.recipients
    if recipients is None:
        ctx.notes.append(UNADDRESSED_NOTE)
    elif s.config.list.address.lower() not in recipients:
        return reject("addressed-elsewhere")
    return CONTINUE


async def html_text(ctx: MailItem, s: Services) -> Decision:
    """An HTML-only mail becomes text here: after its signature was checked (nobody can
    make the list parse HTML without a member's key), within a size bound, off the loop.

    Its HTML, sanitised into Matrix's subset (``fidelity.fromhtml``), is kept for the
    room; the plain text read from it is what mail readers get."""
    content = ctx.content
    assert content is not None
    if content.text.strip() or not content.html:
        return CONTINUE
    markup = "\n".join(content.html)
    if len(markup) > mime.MAX_HTML_CHARS:
        return reject("malformed", why=f"the HTML text is larger than {mime.MAX_HTML_CHARS}")
    converted = await asyncio.to_thread(html_to_matrix, markup)
    ctx.content = replace(content, text=converted.body.strip("\n"), html=())
    ctx.formatted = converted.formatted_body
    return CONTINUE


async def files_within_limits(ctx: MailItem, s: Services) -> Decision:
    """The mail's files are relayed only all together: one that breaks a limit (size, a
    blocked type, a program by its first bytes) refuses the whole post, so that nobody
    reads a message without the file it speaks of; the sender and the admins are told."""
    assert ctx.content is not None
    refusals = check_all(ctx.content.files, s.config.list.attachments)
    if refusals:
        return reject("files-refused", why="; ".join(r.text() for r in refusals))
    return CONTINUE


async def correction_by_author(ctx: MailItem, s: Services) -> Decision:
    """A mail that corrects an earlier post (a signed ``Supersedes:`` header, or a
    ``[correction]`` subject on a reply) becomes an edit of that post in the room and a
    correction mail, only when its signer wrote the post; the marks must be signed."""
    content = ctx.content
    assert content is not None and ctx.signer is not None
    replies = content.in_reply_to if content.threaded else ()
    found = parse_correction(content.subject or "", content.supersedes, replies)
    if found is None:
        return CONTINUE
    original = s.store.posts.for_link(LinkKind.MSGID, found.corrects)
    if original is None:
        return CONTINUE  # nothing relayed to correct: an ordinary post (or reply)
    if original.author.id != ctx.signer.id:
        return reject("correction-not-author")
    ctx.revises = ("correction", original.uid)
    return CONTINUE


DECRYPTED_FACTOR = 10  # decrypted content may be this many times list.max_message_bytes


def inbound_of(ctx: MailItem) -> Inbound:
    """What the stage ends in: the mail as its signer sent it, channel-neutral.

    Its thread is named by the signed thread headers when it has any, else by the
    envelope's, which no signature covers (``replies_signed``; ``threads.place``).
    """
    assert ctx.signer is not None and ctx.envelope is not None and ctx.content is not None
    env, content = ctx.envelope, ctx.content
    if content.threaded:
        ids = (*content.in_reply_to, *reversed(content.references))
    else:
        ids = (*env.in_reply_to, *reversed(env.references))
    return Inbound(
        channel=Channel.EMAIL,
        room=None,
        author=ctx.signer,
        text=content.text,
        formatted=ctx.formatted,
        files=tuple(File(f.filename, f.content_type, f.data) for f in content.files),
        revises=ctx.revises,
        subject=content.subject or "",
        source=(LinkKind.MSGID, env.source_id),
        replies_to=tuple((LinkKind.MSGID, i) for i in ids),
        replies_signed=content.threaded,
        attachments=content.attachments,
        signature=(ctx.signer.fingerprint, ctx.signature) if ctx.signature else None,
        notes=tuple(ctx.notes),
    )
