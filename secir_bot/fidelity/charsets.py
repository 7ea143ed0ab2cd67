"""Text out of mail without mojibake: charsets, transfer encodings, headers, IDN addresses.

Mail clients label their text wrongly more often than not: Outlook and webmail write
Windows-1252 (curly quotes, the euro sign) and call it ISO-8859-1 or US-ASCII; mutt with a
wrong locale sends UTF-8 labelled Latin-1; some send no label at all. The rules here are
the ones browsers settled on (the WHATWG Encoding Standard: a Latin-1 or ASCII label means
Windows-1252, and so on for the other supersets), plus one check that costs nothing: bytes
that are valid UTF-8 and not ASCII are UTF-8 whatever a legacy label says, because text in
a single-byte charset almost never forms valid multi-byte UTF-8 sequences.

Nothing here raises on bad input: an unknown label, bytes that fit no charset or a broken
encoded-word all give the best text available, with U+FFFD for what cannot be read.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import re
from dataclasses import dataclass
from email.message import Message

import idna

# Labels that say nothing about the bytes: read as if there were no label.
_NO_LABEL = frozenset({"unknown-8bit", "x-unknown", "unknown", "x-user-defined", "default"})
# Python text codecs that are not charsets: a mail that names one must not make the bot
# interpret backslash escapes or punycode as characters the sender did not write.
_NOT_CHARSETS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "charmap"}
)
# The superset each label is read as (WHATWG Encoding Standard, "labels and encodings").
_SUPERSET = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "euc_kr": "cp949",  # Outlook's ks_c_5601-1987 is Windows-949
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "shift_jis": "cp932",
}
# ISO charsets whose Windows twin puts letters where the ISO one has C1 controls (0x80 to
# 0x9F): such bytes in text labelled with the ISO name were written by the Windows code page.
_WINDOWS_TWIN = {"iso8859-2": "cp1250", "iso8859-7": "cp1253", "iso8859-13": "cp1257"}
# Labels Python does not know, by the name Python knows them under.
_LABELS = {"iso-8859-8-i": "iso8859-8", "windows-874": "cp874", "x-sjis": "cp932"}
_C1 = re.compile(rb"[\x80-\x9f]")
# Codecs under whose label valid UTF-8 is taken for UTF-8: UTF-8 itself and the single-byte
# code pages, whose text practically never forms valid multi-byte UTF-8 (a short text in a
# multi-byte East Asian charset could, so those labels are believed).
_UTF8_FIRST = ("utf-8", "cp125", "cp874", "iso8859", "koi8", "mac")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?[qQbB]\?[^?\s]*\?=")
_ASCII_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,252}[A-Za-z0-9])?")


def codec_for(label: str | None) -> str | None:
    """The Python codec to read bytes labelled ``label`` with; None when the label names
    no charset we may use (then the bytes decide)."""
    name = (label or "").strip().strip("\"'").lower()
    if not name or name in _NO_LABEL:
        return None
    name = _LABELS.get(name, name)
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if not info._is_text_encoding or info.name in _NOT_CHARSETS:
        return None
    return _SUPERSET.get(info.name, info.name)


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """``data`` as text, read by its charset ``label`` with the rules of this module."""
    codec = codec_for(label)
    if not data.isascii() and (codec is None or codec.startswith(_UTF8_FIRST)):
        # Valid UTF-8 that is not ASCII is UTF-8, whatever a single-byte label says.
        try:
            return data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            pass
    if codec is None:
        # Unlabelled 8-bit text that is not UTF-8: in practice, the Windows code page of
        # Western Europe.
        codec = "cp1252"
    elif codec.startswith("utf-8"):
        codec = "utf-8"  # labelled UTF-8 but not valid: U+FFFD where it breaks
    elif codec in _WINDOWS_TWIN and _C1.search(data):
        codec = _WINDOWS_TWIN[codec]
    try:
        return data.decode(codec, errors="replace").removeprefix("\ufeff")
    except LookupError:  # a codec that exists but cannot decode (none known; defensive)
        return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class PartText:
    """The text of one MIME text part and how it is laid out."""

    text: str  # line ends are "\n"
    subtype: str  # "plain", "html", ...
    flowed: bool = False  # format=flowed (RFC 3676)
    delsp: bool = False  # delsp=yes: the space before a soft break is not text


def payload_bytes(part: Message) -> bytes:
    """The body of ``part`` with its Content-Transfer-Encoding undone (quoted-printable,
    base64; 7bit, 8bit and binary as they are)."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def part_text(part: Message) -> PartText:
    """The text of a ``text/*`` part: transfer encoding undone, charset applied, line ends
    made "\\n", and the format=flowed parameters read."""
    text = decode_bytes(payload_bytes(part), part.get_content_charset())
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    fmt = str(part.get_param("format", "") or "").lower()
    delsp = str(part.get_param("delsp", "") or "").lower()
    return PartText(
        text=text,
        subtype=part.get_content_subtype(),
        flowed=fmt == "flowed",
        delsp=delsp == "yes",
    )


def header_text(value: str | None) -> str:
    """A header value as a reader should see it: unfolded, encoded-words (RFC 2047)
    decoded by their charset with this module's rules, and raw 8-bit text (some clients
    write UTF-8 into headers) read as UTF-8 or else Windows-1252."""
    if value is None:
        return ""
    value = _FOLD.sub("", str(value))
    if not value.isascii():
        # compat32 keeps raw 8-bit header bytes as surrogate escapes.
        value = decode_bytes(value.encode("utf-8", "surrogateescape"))
    if "=?" not in value:
        return value
    out: list[str] = []
    pos = 0
    previous_word = False
    for found in _ENCODED_WORD.finditer(value):
        between = value[pos : found.start()]
        # Blank space between two encoded-words is not text (RFC 2047 §6.2).
        if not (previous_word and not between.strip()):
            out.append(between)
        out.append(_decode_word(found.group(0), found.group(1)))
        pos = found.end()
        previous_word = True
    out.append(value[pos:])
    return "".join(out)


def _decode_word(word: str, label: str) -> str:
    """One encoded-word, each decoded alone: the email package's decoder turns the text
    around encoded-words into escapes that cannot be told from what the sender wrote."""
    try:
        ((data, _),) = email.header.decode_header(word)
    except (email.errors.HeaderParseError, ValueError):
        return word
    if not isinstance(data, bytes):
        return word
    return decode_bytes(data, label.split("*", 1)[0])


def header(msg: Message, name: str) -> str:
    """The value of header ``name`` of ``msg`` as a reader should see it ("" when absent).

    The value is taken as it was received (``raw_items``): the ``email`` package's own
    reading turns raw 8-bit bytes into replacement characters before anyone can decode
    them."""
    wanted = name.lower()
    value = next((v for k, v in msg.raw_items() if k.lower() == wanted), None)
    return header_text(None if value is None else str(value))


def display_address(address: str) -> str:
    """An address for people to read: an IDN domain in A-labels (``xn--``) shown in
    Unicode. An address that is not valid IDNA is shown as it is."""
    local, at, domain = address.rpartition("@")
    if not at or "xn--" not in domain.lower():
        return address
    try:
        return f"{local}@{idna.decode(domain)}"
    except (idna.IDNAError, UnicodeError):
        return address


def transport_address(address: str) -> str:
    """An address for SMTP: the domain in A-labels (ASCII). The local part is left as it is
    (a non-ASCII one needs SMTPUTF8). ``ValueError`` when the domain is not valid IDNA."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise ValueError("not an email address")
    if domain.isascii():
        if not _ASCII_DOMAIN.fullmatch(domain):
            raise ValueError("the domain is not a valid name")
        return f"{local}@{domain.lower()}"
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except (idna.IDNAError, UnicodeError):
        raise ValueError("the domain is not a valid internationalised name") from None
