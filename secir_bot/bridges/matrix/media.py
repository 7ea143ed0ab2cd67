"""Encrypted media in Matrix: the spec's ``EncryptedFile`` both ways, and media events.

In an encrypted room a file is uploaded encrypted (Client-Server API, "Sending encrypted
attachments"): AES-CTR with a single-use 256-bit key and a 64-bit random IV whose counter
half starts at zero, and a SHA-256 hash of the ciphertext, all in the event's ``file``
object (``v: "v2"``, the key as a JSON Web Key ``A256CTR``/``oct``, ``iv`` and ``hashes``
in unpadded base64). The cipher itself is matrix-nio's (``nio.crypto.attachments``, on
pycryptodome): this module checks the ``file`` objects that members' clients send before
handing them to it, and translates its errors into refusals.

Nothing here talks to the homeserver: the bridge uploads ``EncryptedMedia.ciphertext``
(as ``application/octet-stream``) and downloads a member's file (bounded by the list's
size limit: AES-CTR adds no bytes, so the ciphertext is as large as the file), then calls
``decrypt_media``. These are CPU-bound calls of a few milliseconds per MiB.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nio.crypto.attachments import decrypt_attachment, encrypt_attachment
from nio.exceptions import EncryptionError

from secir_bot.fidelity.attachments import clean_content_type, effective_type, safe_filename
from secir_bot.fidelity.fromtext import HTML_FORMAT, MatrixText
from secir_bot.fidelity.images import image_size
from secir_bot.fidelity.reasons import Refusal

MEDIA_MSGTYPES = frozenset({"m.image", "m.file", "m.video", "m.audio"})
# Image types that clients show inline; other images (SVG among them) go as files.
SHOWN_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_MXC = re.compile(r"mxc://[A-Za-z0-9.\-:\[\]]{1,255}/[A-Za-z0-9_\-]{1,255}")


@dataclass(frozen=True)
class EncryptedMedia:
    """A file encrypted for upload, and the ``file`` object without its URL."""

    ciphertext: bytes
    keys: dict[str, Any]

    def file(self, mxc_url: str) -> dict[str, Any]:
        """The event's ``file`` object once the ciphertext is at ``mxc_url``."""
        return {"url": mxc_url, **self.keys}


def encrypt_media(data: bytes) -> EncryptedMedia:
    """``data`` encrypted with a new key and IV, per the spec (nio does the cipher)."""
    ciphertext, keys = encrypt_attachment(data)
    return EncryptedMedia(ciphertext, dict(keys))


def _b64(value: object, size: int) -> bytes | None:
    """Unpadded base64 (standard or URL-safe) of exactly ``size`` bytes, else None."""
    if not isinstance(value, str) or not value.isascii() or len(value) > 4 * size:
        return None
    padded = value + "=" * (-len(value) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def file_problem(file: object) -> str | None:
    """What is wrong with an ``EncryptedFile`` object, or None when it is usable."""
    if not isinstance(file, Mapping):
        return "no file object"
    if not isinstance(file.get("url"), str) or not _MXC.fullmatch(file["url"]):
        return "no mxc:// URL"
    if file.get("v") != "v2":
        return "unsupported version"
    key = file.get("key")
    if not isinstance(key, Mapping):
        return "no key"
    ops = key.get("key_ops")
    if (
        key.get("kty") != "oct"
        or key.get("alg") != "A256CTR"
        or key.get("ext") is not True
        or not isinstance(ops, list)
        or not {"encrypt", "decrypt"} <= set(map(str, ops))
    ):
        return "not an A256CTR key"
    if _b64(key.get("k"), 32) is None:
        return "the key is not 256 bits"
    if _b64(file.get("iv"), 16) is None:
        return "the IV is not 128 bits"
    hashes = file.get("hashes")
    if not isinstance(hashes, Mapping) or _b64(hashes.get("sha256"), 32) is None:
        return "no SHA-256 hash"
    return None


def decrypt_media(
    ciphertext: bytes, file: Mapping[str, Any], name: str = "file"
) -> bytes | Refusal:
    """The plaintext of a downloaded file, or why not: the hash must match the ciphertext
    before anything is decrypted (nio checks it)."""
    problem = file_problem(file)
    if problem is not None:
        return Refusal("media-malformed", {"name": name, "detail": problem})
    try:
        plain: bytes = decrypt_attachment(
            ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"]
        )
    except EncryptionError:
        return Refusal("media-hash-mismatch", {"name": name})
    return plain


def msgtype_for(content_type: str) -> str:
    """The msgtype a file is posted as, by its type."""
    ctype = clean_content_type(content_type)
    if ctype in SHOWN_IMAGES:
        return "m.image"
    if ctype.startswith("video/"):
        return "m.video"
    if ctype.startswith("audio/"):
        return "m.audio"
    return "m.file"


def media_content(
    *,
    filename: str,
    content_type: str,
    data: bytes,
    file: Mapping[str, Any],
    caption: MatrixText | None = None,
) -> dict[str, Any]:
    """The content of the event that posts an encrypted file (``file`` from
    ``EncryptedMedia.file``), with ``info`` (type, size, and an image's width and height
    when its header tells them) and, optionally, a caption (spec v1.10, "Media captions").
    ``m.mentions`` is empty: a relayed file notifies nobody."""
    name = safe_filename(filename, content_type)
    ctype = effective_type(content_type, name)
    msgtype = msgtype_for(ctype)
    info: dict[str, Any] = {"mimetype": ctype, "size": len(data)}
    if msgtype == "m.image":
        size = image_size(data)
        if size is not None:
            info["w"], info["h"] = size
    content: dict[str, Any] = {
        "msgtype": msgtype,
        "body": name,
        "filename": name,
        "file": dict(file),
        "info": info,
        "m.mentions": {},
    }
    if caption is not None and caption.body.strip() and caption.body != name:
        content.update(body=caption.body, format=HTML_FORMAT, formatted_body=caption.formatted_body)
    return content


@dataclass(frozen=True)
class MediaRef:
    """A member's media message: where the file is, how to decrypt it, what it is."""

    msgtype: str
    file: dict[str, Any]  # a checked EncryptedFile
    filename: str  # safe
    content_type: str
    declared_size: int | None  # from info.size: a hint, not a promise
    caption: dict[str, Any] | None  # body/format/formatted_body of the caption, if any

    @property
    def url(self) -> str:
        return str(self.file["url"])


def parse_media(content: Mapping[str, Any]) -> MediaRef | Refusal | None:
    """The file a media message carries; a refusal when it is not one the list can relay
    (not encrypted, or a malformed ``file``); None when ``content`` is not a media
    message at all."""
    msgtype = content.get("msgtype")
    if msgtype not in MEDIA_MSGTYPES:
        return None
    body = str(content.get("body") or "")
    raw_name = content.get("filename") if isinstance(content.get("filename"), str) else body
    found = content.get("info")
    info: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    declared = clean_content_type(str(info.get("mimetype") or ""))
    name = safe_filename(str(raw_name), declared)
    file = content.get("file")
    if file is None:
        return Refusal("media-not-encrypted", {"name": name})
    problem = file_problem(file)
    if problem is not None:
        return Refusal("media-malformed", {"name": name, "detail": problem})
    assert isinstance(file, Mapping)
    size = info.get("size")
    caption = None
    if isinstance(content.get("filename"), str) and body and body != content["filename"]:
        caption = {k: content[k] for k in ("body", "format", "formatted_body") if k in content}
    return MediaRef(
        msgtype=str(msgtype),
        file=dict(file),
        filename=name,
        content_type=effective_type(declared, name),
        declared_size=size if type(size) is int and size >= 0 else None,
        caption=caption,
    )
