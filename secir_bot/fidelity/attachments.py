"""The parts of a decrypted, verified mail: its text and its attachments, within limits.

``walk`` reads the signed MIME entity of a member's mail (the part that the signature
covers, after decryption) and returns the body text (charset, transfer encoding and
format=flowed read by ``charsets``), the HTML when there is no plain text, and every
attachment with a safe file name, its type, its bytes, whether it was inline and its
Content-ID. Limits (``AttachmentLimits``) turn what may not be relayed into ``Refusal``
values with a code and parameters; nothing is dropped without a trace: the sender's own
public key, which Thunderbird attaches to signed mail, is listed in ``skipped``.

Only the wiring decides what a refusal means; the advice here is to refuse the whole post
and tell the sender, so a message is never relayed without a file it speaks of.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from email.message import Message

from secir_bot.fidelity.charsets import PartText, header_text, part_text, payload_bytes
from secir_bot.fidelity.reasons import Refusal

MiB = 1024 * 1024
# File name → type, from Python's own table only (the machine's /etc/mime.types would make
# the answers differ between machines), with the types incident files come in.
_TYPES = mimetypes.MimeTypes()
for _ext, _type in {
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".pcap": "application/vnd.tcpdump.pcap",
    ".log": "text/plain",
    ".zone": "text/plain",
    ".asc": "application/pgp-keys",
    ".exe": "application/x-msdownload",
    ".dll": "application/x-msdownload",
    ".msi": "application/x-msi",
}.items():
    _TYPES.add_type(_type, _ext)
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
MAX_FILENAME = 150  # characters
# Types that are never attachments: the signature, PGP/MIME control parts, and the
# protected headers' "legacy display" copy.
_STRUCTURAL = frozenset(
    {"application/pgp-signature", "application/pgp-encrypted", "text/rfc822-headers"}
)
# Executables by their first bytes (PE, ELF, Mach-O): a declared type or name can lie.
_MAGIC = (
    (b"MZ", "application/x-msdownload"),
    (b"\x7fELF", "application/x-executable"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
)


@dataclass(frozen=True)
class AttachmentLimits:
    """What the list relays as attachments. Sizes are of the decoded bytes.

    Mail is the narrow side: a file that does not compress (images, archives, captures)
    grows by a third in base64 and again in the armored encryption, 1.43 times in all
    (measured with gpg: 6 MiB of files make a 8.6 MiB mail), and many mail servers refuse
    mail over 10 MB (Postfix's default limit is 10,240,000 bytes).
    """

    max_bytes: int = 5 * MiB  # per attachment
    max_total_bytes: int = 6 * MiB  # per post, all attachments together
    max_count: int = 20
    # Patterns ("image/*", "application/pdf", "*/*"); a type must match one allowed and
    # no blocked one. Blocked types and file name endings win over allowed ones.
    allowed_types: tuple[str, ...] = ("*/*",)
    blocked_types: tuple[str, ...] = (
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-mach-binary",
        "application/x-ms-shortcut",
        "application/x-msi",
        "application/hta",
    )
    blocked_extensions: tuple[str, ...] = (
        ".exe", ".com", ".scr", ".pif", ".bat", ".cmd", ".vbs", ".vbe", ".js", ".jse",
        ".wsf", ".wsh", ".msi", ".msp", ".hta", ".cpl", ".lnk", ".ps1", ".jar", ".reg",
        ".dll", ".sys",
    )  # fmt: skip
    # Not relayed and not refused: the sender's public key that mail clients attach.
    skipped_types: tuple[str, ...] = ("application/pgp-keys",)


@dataclass(frozen=True)
class Attachment:
    """One file of a message."""

    filename: str  # safe: no directories, no control characters
    content_type: str  # lower case, "type/subtype"
    data: bytes
    inline: bool = False  # shown in the text by the sender's client (Content-Disposition)
    content_id: str | None = None  # without angle brackets

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class MailParts:
    """What a member's mail consists of."""

    text: PartText | None  # the plain text, when the mail has some
    html: str | None  # the HTML body, when the mail has no plain text
    attachments: tuple[Attachment, ...] = ()
    skipped: tuple[str, ...] = ()  # file names not relayed on purpose (see the limits)
    refusals: tuple[Refusal, ...] = field(default=())


def _matches(content_type: str, patterns: tuple[str, ...]) -> bool:
    major = content_type.split("/", 1)[0]
    return any(p in ("*/*", "*", content_type, f"{major}/*") for p in patterns)


def clean_content_type(value: str | None) -> str:
    """A MIME type as ``type/subtype`` in lower case, or ``application/octet-stream`` when
    it is not one (no parameters, nothing that could end a header line)."""
    value = (value or "").split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE.fullmatch(value) else "application/octet-stream"


def sniffed_type(data: bytes) -> str | None:
    """The type of an executable recognised by its first bytes, else None."""
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def safe_filename(name: str | None, content_type: str = "", index: int = 1) -> str:
    """A file name that is safe to show and to save: the last path segment only, no
    control or bidirectional-override characters (which can make ``exe.pdf`` of
    ``fdp.exe``), no leading dots, not a Windows device name, at most 150 characters
    (the extension kept). A made-up ``attachment-N.ext`` when nothing is left."""
    text = header_text(name) if name and "=?" in name else (name or "")
    text = unicodedata.normalize("NFC", text)
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(
        "_" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co") else ch
        for ch in text
    )
    text = text.strip().lstrip(".").rstrip(". ")
    if _RESERVED.match(text):
        text = "_" + text
    if len(text) > MAX_FILENAME:
        stem, dot, ext = text.rpartition(".")
        ext = dot + ext if dot and 0 < len(ext) <= 10 else ""
        text = (stem if ext else text)[: MAX_FILENAME - len(ext)] + ext
    if not text.strip("_ "):
        guessed = _TYPES.guess_extension(content_type) if content_type else None
        text = f"attachment-{index}{guessed or '.bin'}"
    return text


def effective_type(declared: str, filename: str) -> str:
    """The type to show a file as: the declared one, unless that says nothing
    (``application/octet-stream``) and the file name tells more."""
    declared = clean_content_type(declared)
    if declared == "application/octet-stream":
        guessed, _ = _TYPES.guess_type(filename, strict=False)
        if guessed:
            return clean_content_type(guessed)
    return declared


def check(attachment: Attachment, limits: AttachmentLimits) -> Refusal | None:
    """Why one attachment may not be relayed, or None."""
    name = attachment.filename
    if attachment.size > limits.max_bytes:
        return Refusal(
            "attachment-too-large",
            {"name": name, "size": attachment.size, "limit": limits.max_bytes},
        )
    kinds = {attachment.content_type}
    guessed, _ = _TYPES.guess_type(name, strict=False)
    if guessed:
        kinds.add(clean_content_type(guessed))
    sniffed = sniffed_type(attachment.data)
    if sniffed:
        kinds.add(sniffed)
    blocked = next((k for k in sorted(kinds) if _matches(k, limits.blocked_types)), None)
    if blocked is None and name.lower().endswith(tuple(limits.blocked_extensions)):
        blocked = attachment.content_type
    if blocked is not None:
        return Refusal("attachment-type-blocked", {"name": name, "type": blocked})
    if not _matches(attachment.content_type, limits.allowed_types):
        return Refusal(
            "attachment-type-not-allowed", {"name": name, "type": attachment.content_type}
        )
    return None


def check_all(attachments: tuple[Attachment, ...], limits: AttachmentLimits) -> tuple[Refusal, ...]:
    """Every reason not to relay a post's attachments (one per file, then the totals)."""
    refusals = [r for a in attachments if (r := check(a, limits)) is not None]
    if len(attachments) > limits.max_count:
        refusals.append(
            Refusal("too-many-attachments", {"count": len(attachments), "limit": limits.max_count})
        )
    total = sum(a.size for a in attachments)
    if total > limits.max_total_bytes:
        refusals.append(
            Refusal("attachments-too-large", {"size": total, "limit": limits.max_total_bytes})
        )
    return tuple(refusals)


def _leaves(entity: Message) -> list[Message]:
    """The parts that hold content, in order; an attached message (message/rfc822) counts
    as one part, it is not opened."""
    out: list[Message] = []
    stack = [entity]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            stack.extend(p for p in reversed(payload) if isinstance(p, Message))
        else:
            out.append(part)
    return out


def _attached_message(part: Message) -> bytes:
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    if isinstance(inner, Message):
        try:
            return inner.as_bytes()
        except Exception:  # a message the generator cannot write back: its text instead
            return inner.as_string().encode("utf-8", "surrogateescape")
    return payload_bytes(part)


def _attachment(part: Message, index: int) -> Attachment:
    declared = part.get_content_type()
    raw_name = part.get_filename()
    if declared == "message/rfc822":
        data = _attached_message(part)
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        subject = first.get("Subject") if isinstance(first, Message) else None
        raw_name = raw_name or ((header_text(subject) or "message") + ".eml")
    else:
        data = payload_bytes(part)
    filename = safe_filename(raw_name, clean_content_type(declared), index)
    disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    cid = header_text(part.get("Content-ID")).strip().strip("<>") or None
    return Attachment(
        filename=filename,
        content_type=effective_type(declared, filename),
        data=data,
        inline=disposition == "inline" or (disposition == "" and cid is not None),
        content_id=cid,
    )


def walk(entity: Message, limits: AttachmentLimits | None = None) -> MailParts:
    """The text and attachments of a member's signed MIME entity (already parsed within
    the codec's bounds), checked against ``limits``."""
    limits = limits or AttachmentLimits()
    texts: list[PartText] = []
    htmls: list[str] = []
    files: list[Attachment] = []
    skipped: list[str] = []
    for part in _leaves(entity):
        ctype = part.get_content_type()
        if ctype in _STRUCTURAL and part is not entity:
            continue
        disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        named = part.get_filename() is not None
        body_like = disposition != "attachment" and not named
        if ctype == "text/plain" and body_like:
            texts.append(part_text(part))
        elif ctype == "text/html" and body_like:
            htmls.append(part_text(part).text)
        elif _matches(clean_content_type(ctype), limits.skipped_types):
            skipped.append(safe_filename(part.get_filename(), ctype, len(files) + 1))
        else:
            files.append(_attachment(part, len(files) + 1))
    text = None
    if texts:
        text = PartText(
            text="\n\n".join(t.text.strip("\n") for t in texts),
            subtype="plain",
            flowed=all(t.flowed for t in texts),
            delsp=all(t.delsp for t in texts),
        )
    attachments = tuple(files)
    return MailParts(
        text=text,
        html=None if texts or not htmls else "\n".join(htmls),
        attachments=attachments,
        skipped=tuple(skipped),
        refusals=check_all(attachments, limits),
    )
