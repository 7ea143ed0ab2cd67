"""Shared validators: what a person typed, turned into a clean value or a precise refusal.

The configuration, the command line (``member add``), the commands (``!invite .nl a@b.nl``)
and the nomination mails all accept the same kinds of values, so they are checked here, once.
Each validator takes the raw text and returns the normalised value, or raises
:class:`Invalid` whose message names the problem and can be shown to the person who typed
it::

    >>> email(" Alice@Registry.NL ")
    'alice@registry.nl'
    >>> phone("+31 70 123 4567")
    '+31701234567'
    >>> languages("nl, EN")
    ('nl', 'en')

:func:`problem` adapts a validator to the ``check(value) -> str | None`` form that the
configuration reader uses. Control characters (and the invisible bidirectional overrides
that can make a text read differently from what it is) are refused everywhere.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from typing import TypeVar

import idna
import langcodes
import phonenumbers

from secir_bot import cctld

__all__ = [
    "Invalid",
    "cctld_label",
    "email",
    "fingerprint",
    "language",
    "languages",
    "matrix_user_id",
    "one_line",
    "phone",
    "problem",
    "room_id",
    "timezone",
]

T = TypeVar("T")

# Characters that change how text is displayed without being visible: bidi embeddings,
# overrides and isolates (the "Trojan Source" characters). Refused in every field.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")

_EMAIL = re.compile(r"^[^@\s<>\"(),;:\[\]\\]+@[^@\s<>\"(),;:\[\]\\]+$")
_LDH = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MXID = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
_ROOM = re.compile(r"^![^\s:]+(:[A-Za-z0-9.\-]+(:\d{1,5})?)?$")  # room v12 ids have no server
_HEX = re.compile(r"^[0-9A-F]+$")


class Invalid(ValueError):
    """The text is not an acceptable value; the message says why, for the person who typed it."""


def _quote(text: str) -> str:
    """The user's text for a message: quoted, and cut short if it is long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def one_line(text: str, what: str = "the text", *, max_length: int = 500) -> str:
    """Free text on one line: stripped, not empty, no control or bidi-override characters."""
    value = text.strip()
    if not value:
        raise Invalid(f"{what} is empty")
    for char in value:
        if char in _BIDI_CONTROLS:
            raise Invalid(f"{what} contains an invisible direction control (U+{ord(char):04X})")
        if unicodedata.category(char) == "Cc":
            raise Invalid(f"{what} contains a control character (U+{ord(char):04X})")
    if len(value) > max_length:
        raise Invalid(f"{what} is longer than {max_length} characters")
    return value


def email(text: str) -> str:
    """An email address (``local@domain.tld``), lower-cased; IDN domains are accepted."""
    value = one_line(text, "the email address", max_length=254).lower()
    if not _EMAIL.match(value):
        raise Invalid(f"not an email address: {_quote(value)}")
    local, domain = value.rsplit("@", 1)
    if len(local) > 64:
        raise Invalid(f"the part before @ is longer than 64 characters: {_quote(value)}")
    labels = domain.split(".")
    if len(labels) < 2 or "" in labels:
        raise Invalid(f"not an email address (the domain needs a dot): {_quote(value)}")
    for label in labels:
        ascii_label = label
        if not label.isascii():
            try:
                ascii_label = idna.encode(label).decode("ascii")
            except idna.IDNAError:
                raise Invalid(f"the domain of {_quote(value)} is not a valid name") from None
        if not _LDH.match(ascii_label):
            raise Invalid(f"the domain of {_quote(value)} is not a valid name")
    return value


def matrix_user_id(text: str) -> str:
    """A Matrix user id, ``@name:server`` (the name in lower case, as the spec requires)."""
    value = one_line(text, "the Matrix id", max_length=255)
    if not _MXID.match(value):
        raise Invalid(f"not a Matrix user id (@name:server): {_quote(value)}")
    return value


def room_id(text: str) -> str:
    """A Matrix room id, ``!opaque:server`` (or ``!opaque`` for room version 12)."""
    value = one_line(text, "the room id", max_length=255)
    if not _ROOM.match(value):
        raise Invalid(f"not a Matrix room id (!id or !id:server): {_quote(value)}")
    return value


def cctld_label(text: str) -> cctld.CcTld:
    """A country-code TLD, as U-label or A-label (``.nl``, ``рф``, ``xn--p1ai``)."""
    try:
        return cctld.lookup(one_line(text, "the TLD", max_length=100))
    except cctld.UnknownTld as exc:
        raise Invalid(str(exc)) from None


def phone(text: str) -> str:
    """A phone number in international form, returned as E.164 (``+31701234567``).

    Spaces, dots, dashes and brackets are allowed in the input; the country code is
    required, because members are in every country and a local form would be ambiguous.
    """
    value = one_line(text, "the phone number", max_length=40)
    if not value.startswith("+"):
        raise Invalid(
            f"give the phone number with its country code, like +31 70 123 4567: {_quote(value)}"
        )
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise Invalid(f"not a phone number: {_quote(value)}") from None
    if not phonenumbers.is_valid_number(number):
        raise Invalid(f"not a valid phone number for its country code: {_quote(value)}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone(text: str) -> str:
    """An IANA time zone name (``Europe/Amsterdam``, ``America/Sao_Paulo``, ``UTC``)."""
    value = one_line(text, "the time zone", max_length=64)
    if value in _zones():
        return value
    folded = {zone.lower(): zone for zone in _zones()}
    found = folded.get(value.lower())
    if found is not None:
        return found
    raise Invalid(f"not an IANA time zone name (like Europe/Amsterdam): {_quote(value)}")


def language(text: str) -> str:
    """A BCP 47 language tag, in its standard form (``pt-BR``, ``zh-Hant``)."""
    value = one_line(text, "the language", max_length=35)
    try:
        tag = langcodes.standardize_tag(value)
    except ValueError:  # langcodes' LanguageTagError is a ValueError
        raise Invalid(f"not a language tag (like en, pt-BR): {_quote(value)}") from None
    if not langcodes.tag_is_valid(tag):
        raise Invalid(f"not a known language tag (like en, pt-BR): {_quote(value)}")
    return tag


def languages(text: str) -> tuple[str, ...]:
    """An ordered, comma- or space-separated list of language tags, without repeats."""
    parts = [p for p in re.split(r"[,\s]+", one_line(text, "the languages")) if p]
    out: list[str] = []
    for part in parts:
        tag = language(part)
        if tag not in out:
            out.append(tag)
    return tuple(out)


def fingerprint(text: str) -> str:
    """A full OpenPGP v4 fingerprint: 40 hex digits, upper case (spaces and ``0x`` allowed)."""
    value = one_line(text, "the fingerprint", max_length=120)
    compact = re.sub(r"[\s:]", "", value).upper().removeprefix("0X")
    if not _HEX.match(compact):
        raise Invalid(f"a fingerprint is hexadecimal digits only: {_quote(value)}")
    if len(compact) == 64:
        raise Invalid("that is a v5/v6 fingerprint; only OpenPGP v4 keys are supported")
    if len(compact) in (8, 16):
        raise Invalid("that is a short key id, which anyone can forge; give the full fingerprint")
    if len(compact) != 40:
        raise Invalid(f"a v4 fingerprint has 40 hex digits, this has {len(compact)}")
    return compact


def problem(validator: Callable[[str], object]) -> Callable[[str], str | None]:
    """Adapt a validator to the configuration reader's ``check`` form (None when fine)."""

    def check(value: str) -> str | None:
        try:
            validator(value)
        except Invalid as exc:
            return str(exc)
        return None

    return check
