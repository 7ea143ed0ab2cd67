"""Matrix encrypted media (issue 10): the spec's EncryptedFile both ways.

nio encrypts; the result is checked here against the spec with an independent AES-CTR
implementation (``cryptography``), and members' ``file`` objects are checked before nio
decrypts them. The real-server round trip is in ``integration/test_fidelity_media.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secir_bot.bridges.matrix.media import (
    MediaRef,
    decrypt_media,
    encrypt_media,
    file_problem,
    media_content,
    msgtype_for,
    parse_media,
)
from secir_bot.fidelity.fromtext import MatrixText
from secir_bot.fidelity.images import image_size
from secir_bot.fidelity.reasons import Refusal

MXC = "mxc://test.local/AbCdEf123"
PNG = (
    b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 640, 480) + bytes(9)
)


def unb64(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_")


def test_issue10_encrypted_file_matches_the_spec() -> None:
    data = os.urandom(100_000)
    media = encrypt_media(data)
    file = media.file(MXC)
    assert file["url"] == MXC and file["v"] == "v2"
    assert file["key"]["kty"] == "oct" and file["key"]["alg"] == "A256CTR"
    assert file["key"]["ext"] is True
    assert set(file["key"]["key_ops"]) >= {"encrypt", "decrypt"}
    assert "=" not in file["key"]["k"] and "+" not in file["key"]["k"]  # URL-safe, unpadded
    key, iv = unb64(file["key"]["k"]), unb64(file["iv"])
    assert len(key) == 32 and len(iv) == 16
    assert iv[8:] == bytes(8)  # the counter half starts at zero
    digest = unb64(file["hashes"]["sha256"])
    assert digest == hashlib.sha256(media.ciphertext).digest()
    # An independent AES-256-CTR decrypts nio's ciphertext to the original.
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    assert decryptor.update(media.ciphertext) + decryptor.finalize() == data
    assert file_problem(file) is None


def test_issue10_round_trip_and_hash_mismatch_refused() -> None:
    data = b"zone excerpt\n" * 1000
    media = encrypt_media(data)
    file = media.file(MXC)
    assert decrypt_media(media.ciphertext, file) == data
    tampered = bytearray(media.ciphertext)
    tampered[10] ^= 0x01
    assert decrypt_media(bytes(tampered), file, "zone.txt") == Refusal(
        "media-hash-mismatch", {"name": "zone.txt"}
    )
    assert decrypt_media(media.ciphertext + b"x", file) == Refusal(
        "media-hash-mismatch", {"name": "file"}
    )


def test_every_upload_gets_its_own_key_and_iv() -> None:
    one, two = encrypt_media(b"same"), encrypt_media(b"same")
    assert one.keys["key"]["k"] != two.keys["key"]["k"]
    assert one.keys["iv"] != two.keys["iv"]


def test_file_from_another_client_with_standard_base64_key() -> None:
    """A file object written by another implementation (here: by hand, per the spec)."""
    key, iv, data = os.urandom(32), os.urandom(8) + bytes(8), b"other client"
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    cipher = encryptor.update(data) + encryptor.finalize()
    file = {
        "url": MXC,
        "v": "v2",
        "key": {
            "kty": "oct",
            "alg": "A256CTR",
            "ext": True,
            "key_ops": ["decrypt", "encrypt"],
            "k": base64.urlsafe_b64encode(key).decode().rstrip("="),
        },
        "iv": base64.b64encode(iv).decode().rstrip("="),
        "hashes": {"sha256": base64.b64encode(hashlib.sha256(cipher).digest()).decode()},
    }
    assert decrypt_media(cipher, file) == data


def good_file() -> dict[str, Any]:
    return encrypt_media(b"x").file(MXC)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda f: f.pop("url"), "no mxc:// URL"),
        (lambda f: f.update(url="https://evil.test/x"), "no mxc:// URL"),
        (lambda f: f.update(url="mxc://server/../../etc"), "no mxc:// URL"),
        (lambda f: f.update(v="v1"), "unsupported version"),
        (lambda f: f.pop("key"), "no key"),
        (lambda f: f["key"].update(alg="A128CTR"), "not an A256CTR key"),
        (lambda f: f["key"].update(kty="RSA"), "not an A256CTR key"),
        (lambda f: f["key"].update(ext=False), "not an A256CTR key"),
        (lambda f: f["key"].update(key_ops=["decrypt"]), "not an A256CTR key"),
        (lambda f: f["key"].update(k="c2hvcnQ"), "the key is not 256 bits"),  # AES-128 key
        (lambda f: f["key"].update(k="!" * 43), "the key is not 256 bits"),
        (lambda f: f.update(iv="AAAA"), "the IV is not 128 bits"),
        (lambda f: f.update(iv=5), "the IV is not 128 bits"),
        (lambda f: f.update(hashes={}), "no SHA-256 hash"),
        (lambda f: f["hashes"].update(sha256="é"), "no SHA-256 hash"),
    ],
)
def test_malformed_file_objects_are_refused_before_decrypting(change: Any, problem: str) -> None:
    file = good_file()
    change(file)
    assert file_problem(file) == problem
    assert decrypt_media(b"x", file, "a.txt") == Refusal(
        "media-malformed", {"name": "a.txt", "detail": problem}
    )


@pytest.mark.parametrize(
    ("ctype", "msgtype"),
    [
        ("image/png", "m.image"),
        ("IMAGE/JPEG", "m.image"),
        ("image/svg+xml", "m.file"),
        ("video/mp4", "m.video"),
        ("audio/ogg", "m.audio"),
        ("application/pdf", "m.file"),
        ("text/html\r\nX: y", "m.file"),
    ],
)
def test_msgtype_for(ctype: str, msgtype: str) -> None:
    assert msgtype_for(ctype) == msgtype


def test_media_content_for_an_image_with_caption() -> None:
    media = encrypt_media(PNG)
    content = media_content(
        filename="../chart.png",
        content_type="application/octet-stream",
        data=PNG,
        file=media.file(MXC),
        caption=MatrixText("Traffic at 09:00", "<p>Traffic at 09:00</p>"),
    )
    assert content == {
        "msgtype": "m.image",
        "body": "Traffic at 09:00",
        "format": "org.matrix.custom.html",
        "formatted_body": "<p>Traffic at 09:00</p>",
        "filename": "chart.png",
        "file": media.file(MXC),
        "info": {"mimetype": "image/png", "size": len(PNG), "w": 640, "h": 480},
        "m.mentions": {},
    }
    assert "url" not in content  # an encrypted file has no plain url


def test_media_content_without_caption_and_parse_back() -> None:
    media = encrypt_media(b"%PDF-1.4")
    content = media_content(
        filename="report.pdf",
        content_type="application/pdf",
        data=b"%PDF-1.4",
        file=media.file(MXC),
    )
    assert content["body"] == "report.pdf" and "formatted_body" not in content
    ref = parse_media(content)
    assert ref == MediaRef(
        msgtype="m.file",
        file=media.file(MXC),
        filename="report.pdf",
        content_type="application/pdf",
        declared_size=8,
        caption=None,
    )
    assert isinstance(ref, MediaRef) and ref.url == MXC


def test_parse_media_caption_and_refusals() -> None:
    file = good_file()
    element = {
        "msgtype": "m.image",
        "body": "see **this**",
        "format": "org.matrix.custom.html",
        "formatted_body": "see <strong>this</strong>",
        "filename": "shot.png",
        "info": {"mimetype": "image/png", "size": -3},
        "file": file,
    }
    ref = parse_media(element)
    assert isinstance(ref, MediaRef)
    assert ref.caption == {
        "body": "see **this**",
        "format": "org.matrix.custom.html",
        "formatted_body": "see <strong>this</strong>",
    }
    assert ref.declared_size is None
    unencrypted = {"msgtype": "m.file", "body": "a.txt", "url": MXC}
    assert parse_media(unencrypted) == Refusal("media-not-encrypted", {"name": "a.txt"})
    broken = {**element, "file": {**file, "v": "v1"}}
    assert parse_media(broken) == Refusal(
        "media-malformed", {"name": "shot.png", "detail": "unsupported version"}
    )
    assert parse_media({"msgtype": "m.text", "body": "hi"}) is None


# -- image sizes -------------------------------------------------------------------------------


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + bytes(9)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + bytes(3)
    return b"\xff\xd8" + app0 + sof + b"\xff\xda" + bytes(10)


def test_image_size() -> None:
    assert image_size(PNG) == (640, 480)
    assert image_size(b"GIF89a" + struct.pack("<HH", 32, 16) + bytes(10)) == (32, 16)
    assert image_size(jpeg(1920, 1080)) == (1920, 1080)
    assert image_size(b"\xff\xd8\xff\xda") is None  # scan before any frame header
    assert image_size(b"\xff\xd8" + b"\xff\xe0\x00\x00") is None  # bad length
    assert image_size(PNG[:20]) is None
    assert image_size(b"not an image") is None
    huge = PNG[:16] + struct.pack(">II", 2**31, 1) + PNG[24:]
    assert image_size(huge) is None
