"""The static hostile cases: no key needed, written to tests/corpus/hostile/.

This module holds the malformed and oversized ones; ``static_envelope.py`` those about
encryption, armor and automatic mail. The order is fixed: the corpus is written in it.
"""

from __future__ import annotations

from secir_bot.sandbox.hostile.base import (
    ARMOR,
    AUTOMATED,
    ENC,
    FROM,
    NOT_ENCRYPTED,
    UNDECRYPTABLE,
    UNREADABLE,
    Add,
    Case,
    _head,
    _mail,
    _marker,
    _nested,
    _parts,
    _pgp_mime,
)
from secir_bot.sandbox.hostile.static_envelope import armor, automatic, squatting, unencrypted


def static_cases() -> list[Case]:
    """Every case that needs no key (deterministic)."""
    cases: list[Case] = []

    def add(name: str, data: bytes, outcome: str, *reasons: str) -> None:
        cases.append(Case(name, data, outcome, reasons))

    for section in (
        _mime,
        _nesting,
        _huge_headers,
        _nul_bytes,
        _encodings,
        armor,
        unencrypted,
        automatic,
        squatting,
    ):
        section(add)
    return cases


def _mime(add: Add) -> None:
    """Malformed MIME."""
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


def _nesting(add: Add) -> None:
    """Nesting and part counts."""
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


def _huge_headers(add: Add) -> None:
    """Huge headers."""
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


def _nul_bytes(add: Add) -> None:
    """NUL bytes."""
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


def _encodings(add: Add) -> None:
    """Broken encodings."""
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
