"""The static hostile cases: no key needed, written to tests/corpus/hostile/."""

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
    Case,
    _head,
    _mail,
    _marker,
    _nested,
    _parts,
    _pgp_mime,
)


def static_cases() -> list[Case]:
    """Every case that needs no key (deterministic)."""
    cases: list[Case] = []

    def add(name: str, data: bytes, outcome: str, *reasons: str) -> None:
        cases.append(Case(name, data, outcome, reasons))

    # -- malformed MIME ---------------------------------------------------------------
    add(
        "mime-no-boundary",
        _mail("mime-no-boundary", _marker("x"), ctype=b"multipart/mixed"),
        "rejected",
        *NOT_ENCRYPTED,
        *UNREADABLE,
    )
    add(
        "mime-unclosed",
        _mail(
            "mime-unclosed",
            b"--p\r\nContent-Type: text/plain\r\n\r\n" + _marker("x"),
            ctype=b'multipart/mixed; boundary="p"',
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )
    for n in (0, 1, 3, 5):
        parts = (
            b"".join(
                b"--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
                for _ in range(n)
            )
            + b"--e--\r\n"
        )
        add(
            f"encrypted-{n}-parts",
            _mail(f"encrypted-{n}-parts", parts, ctype=ENC),
            "rejected",
            *UNREADABLE,
        )
    add(
        "encrypted-wrong-control",
        _mail(
            "encrypted-wrong-control",
            _pgp_mime(b"Version: 1", ARMOR % b"hQEMA").replace(
                b"application/pgp-encrypted\r\n", b"text/plain\r\n", 1
            ),
            ctype=ENC,
        ),
        "rejected",
        *UNREADABLE,
    )
    add(
        "encrypted-no-armor",
        _mail("encrypted-no-armor", _pgp_mime(b"Version: 1", _marker("noarmor")), ctype=ENC),
        "rejected",
        *UNREADABLE,
    )
    for i, ctype in enumerate(
        (
            b"multipart/",
            b"/",
            b";;;",
            b'text/plain; charset="',
            b"\x00",
            b"multipart/mixed; boundary=",
            b"message/rfc822",
        )
    ):
        add(
            f"bad-content-type-{i}",
            _mail(f"bad-content-type-{i}", _marker("ct"), ctype=ctype),
            "rejected",
            *NOT_ENCRYPTED,
            *UNREADABLE,
        )
    add(
        "header-without-colon",
        _mail("header-without-colon", _marker("hc"), headers=b"This is not a header\r\n"),
        "rejected",
        *NOT_ENCRYPTED,
        *UNREADABLE,
    )
    add(
        "lf-only",
        _mail("lf-only", _marker("lf")).replace(b"\r\n", b"\n"),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "cr-only",
        _mail("cr-only", _marker("cr")).replace(b"\r\n", b"\r"),
        "rejected",
        *NOT_ENCRYPTED,
        *UNREADABLE,
        *AUTOMATED,
    )
    add(
        "long-line",
        _mail("long-line", b"x" * 200_000 + b"\r\n" + _marker("ll")),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "two-content-types",
        _mail("two-content-types", _marker("2ct"), headers=b"Content-Type: " + ENC + b"\r\n"),
        "rejected",
        *NOT_ENCRYPTED,
        *UNREADABLE,
    )
    add(
        "base64-garbage",
        _mail(
            "base64-garbage",
            b"!!!not base64 " + _marker("b64"),
            headers=b"Content-Transfer-Encoding: base64\r\n",
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "qp-garbage",
        _mail(
            "qp-garbage",
            b"=ZZ=\r\n=" + _marker("qp"),
            headers=b"Content-Transfer-Encoding: quoted-printable\r\n",
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )

    # -- nesting and part counts ------------------------------------------------------
    for depth in (13, 20, 50, 99):
        add(f"nested-{depth}", _head(f"nested-{depth}") + _nested(depth), "rejected", *UNREADABLE)
    for depth in (101, 300, 1000, 3000):
        add(
            f"nested-{depth}",
            _head(f"nested-{depth}") + _nested(depth),
            "rejected",
            "more than 100 MIME parts",
        )
    for depth in (30, 200):
        add(
            f"nested-digest-{depth}",
            _head(f"nested-digest-{depth}") + _nested(depth, b"multipart/digest"),
            "rejected",
            *UNREADABLE,
        )
    for count in (101, 1000, 20_000):
        add(
            f"parts-{count}",
            _mail(f"parts-{count}", _parts(count), ctype=b'multipart/mixed; boundary="p"'),
            "rejected",
            "more than 100 MIME parts",
        )

    # -- huge headers ------------------------------------------------------------------
    add(
        "header-500k",
        _mail("header-500k", _marker("h500"), headers=b"X-Big: " + b"a" * 500_000 + b"\r\n"),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "headers-10000",
        _mail(
            "headers-10000",
            _marker("h10k"),
            headers=b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)),
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "folded-100k",
        _mail(
            "folded-100k", _marker("fold"), headers=b"X-Folded: a" + b"\r\n b" * 100_000 + b"\r\n"
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "subject-200k",
        _mail("subject-200k", _marker("subj"), headers=b"Subject: " + b"s " * 100_000 + b"\r\n"),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "message-id-10k",
        _mail("message-id-10k", _marker("mid"), msgid=b"<" + b"m" * 10_000 + b"@hostile.test>"),
        "rejected",
        *NOT_ENCRYPTED,
    )
    add(
        "over-the-limit",
        _mail("over-the-limit", _marker("big") + b"y" * 2_100_000),
        "rejected",
        "larger than",
    )

    # -- NUL bytes ---------------------------------------------------------------------
    for i, where in enumerate(
        (
            "header-name",
            "header-value",
            "body",
            "boundary",
            "armor",
            "subject",
            "from",
            "message-id",
        )
    ):
        data = _mail(f"nul-{where}", _marker("nul"))
        if where == "header-name":
            data = data.replace(b"To:", b"T\x00o:", 1)
        elif where == "header-value":
            data = data.replace(b"Hostile", b"Host\x00ile", 1)
        elif where == "body":
            data = data + b"\x00" * 100
        elif where == "boundary":
            data = _mail(
                f"nul-{where}",
                _pgp_mime(b"Version: 1", ARMOR % b"hQ\x00EMA"),
                ctype=ENC.replace(b'"e"', b'"e\x00"'),
            )
        elif where == "armor":
            data = _mail(f"nul-{where}", ARMOR % (b"hQEM\x00A" + _marker("a")))
        elif where == "subject":
            data = data.replace(b"Subject: ", b"Subject: \x00\x00", 1)
        elif where == "from":
            data = data.replace(FROM + b">", FROM + b"\x00>", 1)
        else:
            data = _mail(f"nul-{where}", _marker("nulmid"), msgid=b"<a\x00b@hostile.test>")
        add(
            f"nul-{where}",
            data,
            "rejected",
            *NOT_ENCRYPTED,
            *UNREADABLE,
            *UNDECRYPTABLE,
            *AUTOMATED,
        )
        del i

    # -- broken encodings --------------------------------------------------------------
    for i, header in enumerate(
        (
            b"Subject: =?utf-8?b?!!!!?=\r\n",
            b"Subject: =?x-unknown?q?abc?=\r\n",
            b"Subject: \xff\xfe\xfd\r\n",
            b"Subject: =?utf-7?q?+AGEAYgBj-?=\r\n",
            b"From: =?utf-8?q?Evil=2C_<x@y>?= <" + FROM + b">\r\n",
        )
    ):
        add(
            f"encoding-header-{i}",
            _mail(f"encoding-header-{i}", _marker("eh"), headers=header),
            "rejected",
            *NOT_ENCRYPTED,
        )
    for i, ctype in enumerate(
        (
            b"text/plain; charset=x-unknown",
            b"text/plain; charset=utf-7",
            b"text/plain; charset=\xff\xfe",
        )
    ):
        add(
            f"encoding-charset-{i}",
            _mail(f"encoding-charset-{i}", b"\xff\xfe" + _marker("c"), ctype=ctype),
            "rejected",
            *NOT_ENCRYPTED,
        )
    add(
        "encoding-8bit-everywhere",
        _mail(
            "encoding-8bit-everywhere",
            bytes(range(128, 256)) + _marker("8bit"),
            headers=b"X-8: " + bytes(range(128, 256)) + b"\r\n",
        ),
        "rejected",
        *NOT_ENCRYPTED,
    )

    # -- garbage armor -----------------------------------------------------------------
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

    # -- unencrypted -------------------------------------------------------------------
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

    # -- loops and automatic mail ------------------------------------------------------
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

    # -- F5: squatting a known Message-ID (both refused, each as its own item) ---------
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
    return cases
