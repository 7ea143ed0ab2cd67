"""Static hostile cases about the envelope: garbage armor, no encryption, loops and
automatic mail, squatted Message-IDs (part of ``static_cases``)."""

from __future__ import annotations

import base64
import zlib

from secir_bot.sandbox.hostile.base import (
    ARMOR,
    AUTOMATED,
    ENC,
    FROM,
    LIST,
    LIST_ID,
    NOT_ENCRYPTED,
    UNDECRYPTABLE,
    UNREADABLE,
    Add,
    _mail,
    _marker,
    _pgp_mime,
)


def armor(add: Add) -> None:
    """Garbage armor."""
    garbage = {
        "begin-only": b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n",
        "end-first": b"-----END PGP MESSAGE-----\r\n-----BEGIN PGP MESSAGE-----\r\n",
        "empty": ARMOR % b"",
        "random": ARMOR % base64.b64encode(bytes(range(256)) * 4),
        "bad-crc": ARMOR % (base64.b64encode(b"\x85\x01\x0c" + bytes(64)) + b"\r\n=AAAA"),
        "not-base64": ARMOR % b"!!!! **** ????",
        "signature-armor": b"-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n"
        b"-----END PGP SIGNATURE-----\r\n",
        "public-key": b"-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\nmQ\r\n"
        b"-----END PGP PUBLIC KEY BLOCK-----\r\n",
        "zlib": ARMOR % base64.b64encode(zlib.compress(b"\0" * 100_000)),
        "literal-packet": ARMOR % base64.b64encode(b"\xcb\x0fb\x00\x00\x00\x00\x00" + b"x" * 8),
        "marker-packet": ARMOR % base64.b64encode(b"\xca\x03PGP"),
    }
    for name, armor in garbage.items():
        add(
            f"armor-{name}",
            _mail(f"armor-{name}", armor),
            "rejected",
            *UNDECRYPTABLE,
            *NOT_ENCRYPTED,
        )
        add(
            f"armor-{name}-pgpmime",
            _mail(f"armor-{name}-pgpmime", _pgp_mime(b"Version: 1", armor), ctype=ENC),
            "rejected",
            *UNDECRYPTABLE,
            *UNREADABLE,
        )
    add(
        "armor-in-html-only",
        _mail("armor-in-html-only", b"<p>" + ARMOR % b"hQEMA" + b"</p>", ctype=b"text/html"),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "armor-text-before",
        _mail("armor-text-before", _marker("before") + ARMOR % b"hQEMA"),
        "rejected",
        "outside the encrypted block",
    )
    add(
        "armor-text-after",
        _mail("armor-text-after", ARMOR % b"hQEMA" + _marker("after")),
        "rejected",
        "outside the encrypted block",
    )
    add(
        "armor-twice",
        _mail("armor-twice", ARMOR % b"hQEMA" + ARMOR % b"hQEMB"),
        "rejected",
        "more than one encrypted block",
    )
    add(
        "armor-plus-attachment",
        _mail(
            "armor-plus-attachment",
            b"--p\r\nContent-Type: text/plain\r\n\r\n" + ARMOR % b"hQEMA" + b"--p\r\n"
            b"Content-Type: application/pdf\r\n\r\n" + _marker("pdf") + b"--p--\r\n",
            ctype=b'multipart/mixed; boundary="p"',
        ),
        "rejected",
        "outside the encrypted block",
    )
    add(
        "partial-encryption",
        _mail(
            "partial-encryption",
            b"--p\r\nContent-Type: "
            + ENC
            + b"\r\n\r\n"
            + _pgp_mime(b"Version: 1", ARMOR % b"hQEMA")
            + b"--p\r\nContent-Type: text/plain\r\n\r\n"
            + _marker("pe")
            + b"--p--\r\n",
            ctype=b'multipart/mixed; boundary="p"',
        ),
        "rejected",
        "outside the encrypted block",
    )
    for count in (1, 3000):
        bad = b"".join(b"\xff\xfe-%d: \xc3\x28\r\n" % i for i in range(count))
        armor = (
            b"-----BEGIN PGP MESSAGE-----\r\n" + bad + b"\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n"
        )
        add(
            f"armor-bad-utf8-headers-{count}",
            _mail(f"armor-bad-utf8-headers-{count}", armor),
            "rejected",
            *UNDECRYPTABLE,
        )


def unencrypted(add: Add) -> None:
    """Unencrypted."""
    add("plain", _mail("plain", _marker("plain")), "rejected", *NOT_ENCRYPTED)
    add(
        "html-only",
        _mail("html-only", b"<p>" + _marker("html") + b"</p>", ctype=b"text/html"),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "html-quadratic",
        _mail(
            "html-quadratic", b"<p>" + _marker("hq") + b"</p>" + b"<a" * 100_000, ctype=b"text/html"
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "clearsigned-unencrypted",
        _mail(
            "clearsigned-unencrypted",
            b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\n"
            + _marker("cs")
            + b"-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n",
        ),
        "rejected",
        "signed but not encrypted",
    )
    add(
        "multipart-signed-unencrypted",
        _mail(
            "multipart-signed-unencrypted",
            b"--s\r\nContent-Type: text/plain\r\n\r\n" + _marker("ms") + b"--s\r\n"
            b"Content-Type: application/pgp-signature\r\n\r\nAAAA\r\n--s--\r\n",
            ctype=b'multipart/signed; protocol="application/pgp-signature"; boundary="s"',
        ),
        "rejected",
        "signed but not encrypted",
    )
    add("empty-body", _mail("empty-body", b""), "rejected", *NOT_ENCRYPTED)


def automatic(add: Add) -> None:
    """Loops and automatic mail."""
    add(
        "loop-list-id",
        _mail("loop-list-id", _marker("l1"), headers=b"List-Id: SECIR <" + LIST_ID + b">\r\n"),
        "dropped",
        "own mail",
    )
    add(
        "loop-marker",
        _mail("loop-marker", _marker("l2"), headers=b"X-Secir-List: " + LIST_ID + b"\r\n"),
        "dropped",
        "own mail",
    )
    add(
        "loop-from-list",
        _mail("loop-from-list", _marker("l3"), sender=LIST),
        "dropped",
        "list address",
    )
    for i, header in enumerate(
        (
            b"Auto-Submitted: auto-replied\r\n",
            b"Auto-Submitted: auto-generated\r\n",
            b"Precedence: bulk\r\n",
            b"Precedence: junk\r\n",
            b"Precedence: auto_reply\r\n",
            b"X-Autoreply: yes\r\n",
            b"X-Autorespond: yes\r\n",
        )
    ):
        add(f"auto-{i}", _mail(f"auto-{i}", _marker("auto"), headers=header), "dropped", *AUTOMATED)
    add(
        "auto-report",
        _mail(
            "auto-report",
            b"--r\r\nContent-Type: text/plain\r\n\r\n" + _marker("rep") + b"--r--\r\n",
            ctype=b'multipart/report; report-type=delivery-status; boundary="r"',
        ),
        "dropped",
        *AUTOMATED,
    )
    add(
        "auto-daemon",
        _mail("auto-daemon", _marker("md"), sender=b"MAILER-DAEMON@hostile.test"),
        "dropped",
        *AUTOMATED,
    )
    add(
        "auto-no-from",
        _mail("auto-no-from", _marker("nf")).replace(b"From: Hostile <" + FROM + b">\r\n", b""),
        "dropped|rejected",  # a mail server may add a From line of its own
        *AUTOMATED,
        *NOT_ENCRYPTED,
    )


def squatting(add: Add) -> None:
    """F5: squatting a known Message-ID (both refused, each as its own item)."""
    for i in range(2):
        add(
            f"squat-{i}",
            _mail(f"squat-{i}", _marker(f"sq{i}"), msgid=b"<squat@hostile.test>"),
            "rejected",
            *NOT_ENCRYPTED,
        )
    # Parametric variants of the commonest shapes, for volume.
    for i in range(60):
        add(
            f"plain-variant-{i}",
            _mail(f"plain-variant-{i}", _marker(f"pv{i}") * (i + 1)),
            "rejected",
            *NOT_ENCRYPTED,
        )
    for i in range(20):
        armor = ARMOR % base64.b64encode(bytes((i * 7 + j) % 256 for j in range(64 + i)))
        add(f"armor-variant-{i}", _mail(f"armor-variant-{i}", armor), "rejected", *UNDECRYPTABLE)
