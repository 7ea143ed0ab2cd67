"""The ccTLDs that secir-bot serves, and turning what a person types into one of them.

The table lives in ``secir_bot/data/cctlds.json``, which ships with the package. It is made by
``scripts/gen_cctlds.py`` from the Public Suffix List and ISO 3166-1, cross-checked against
IANA's root zone database (see that script for the rules and how to regenerate it); nothing
here touches the network. The file is read once, on first use.

Every delegated two-letter ccTLD is in it, including ``.uk``, ``.eu``, ``.ac`` and ``.su``, and
so is every delegated IDN ccTLD (``.рф``, ``.中国``). Generic TLDs (``.com``, ``.org``, the IDN
gTLDs) and made-up labels are not, and :func:`lookup` refuses them with a message that can be
shown to the person who typed them::

    >>> lookup(" .NL ").a_label
    'nl'
    >>> lookup("рф").a_label
    'xn--p1ai'
    >>> lookup("xn--p1ai").display
    '.рф'
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import idna

__all__ = ["CcTld", "Kind", "UnknownTld", "all_cctlds", "lookup"]

Kind = Literal["ascii", "idn"]

EXAMPLE = "give the ccTLD itself, like .nl or .рф"

# An ASCII label as the DNS allows it (letters, digits, inner hyphens), already lower case.
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class CcTld:
    """One country-code TLD: its two spellings, the country, and whether it is an IDN.

    ``a_label`` is the form stored everywhere (lower case, ASCII, no dot); ``u_label`` is the
    form people read, and is the same as ``a_label`` for ASCII ccTLDs.
    """

    a_label: str
    u_label: str
    iso3166: str
    country: str
    kind: Kind

    @property
    def display(self) -> str:
        """The ccTLD as people write it, with its dot: ``.nl``, ``.рф``."""
        return "." + self.u_label


class UnknownTld(ValueError):
    """The text does not name a ccTLD; the message says why and can be shown to a user."""


def lookup(text: str) -> CcTld:
    """Return the ccTLD that ``text`` names, or raise :class:`UnknownTld` saying why not.

    Case, surrounding whitespace, one leading dot and one trailing (root) dot are ignored, and
    IDNs may be given as U-label or A-label: ``"nl"``, ``" .NL. "``, ``"рф"`` and
    ``"xn--p1ai"`` are all fine.
    """
    label = _single_label(text)
    a_label = _to_a_label(label, text)
    found = _table().get(a_label)
    if found is None:
        raise UnknownTld(_not_a_cctld(a_label, _other_tlds().get(a_label)))
    return found


def all_cctlds() -> list[CcTld]:
    """Every ccTLD in the shipped table, sorted by A-label (a fresh list on each call)."""
    return list(_table().values())


def _single_label(text: str) -> str:
    """Reduce the raw text to one lower-case label, or explain what is wrong with it."""
    stripped = text.strip()
    if not stripped:
        raise UnknownTld(f"no TLD given; {EXAMPLE}")
    if any(char.isspace() for char in stripped):
        raise UnknownTld(f"{_quote(stripped)} contains a space; {EXAMPLE}")
    try:
        # UTS 46 mapping: folds case and turns ideographic and full-width full stops into ".".
        mapped = idna.uts46_remap(stripped, std3_rules=True, transitional=False)
    except idna.IDNAError:
        raise UnknownTld(
            f"{_quote(stripped)} contains characters that cannot be in a TLD; {EXAMPLE}"
        ) from None
    label = mapped.removeprefix(".").removesuffix(".")
    if not label:
        raise UnknownTld(f"{_quote(stripped)} has no label; {EXAMPLE}")
    if "." in label:
        parts = label.split(".")
        if "" in parts:
            raise UnknownTld(
                f"{_quote(stripped)} has an empty label (two dots in a row); {EXAMPLE}"
            )
        raise UnknownTld(f"{_quote(stripped)} has more than one label; {_hint(parts[-1])}")
    return label


def _quote(text: str) -> str:
    """The user's text for a message: quoted, and cut short if someone pasted a novel."""
    text = text.strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _hint(last: str) -> str:
    """Advice for a multi-label name: point at its last label when that is a ccTLD."""
    try:
        return f"give the ccTLD itself, like {lookup(last).display}"
    except UnknownTld:
        return EXAMPLE


def _to_a_label(label: str, text: str) -> str:
    """The A-label for one mapped label, checking it is a valid DNS label either way."""
    if label.isascii():
        if not _LDH_LABEL.fullmatch(label):
            raise UnknownTld(f"{_quote(text)} is not a valid TLD label; {EXAMPLE}")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise UnknownTld(f"{_quote(text)} is not a valid IDN A-label; {EXAMPLE}") from None
        return label
    try:
        return idna.encode(label).decode("ascii")
    except idna.IDNAError:
        raise UnknownTld(
            f"{_quote(text)} is not a valid internationalised label; {EXAMPLE}"
        ) from None


def _not_a_cctld(a_label: str, iana_type: str | None) -> str:
    """The refusal for a well-formed label that is not in the table, by what IANA says it is."""
    if a_label.startswith("xn--"):
        shown = f".{idna.decode(a_label)} ({a_label})"
    else:
        shown = f".{a_label}"
    serves = "secir-bot serves ccTLDs only (like .nl or .рф)"
    if iana_type == "infrastructure":
        return f"{shown} is an infrastructure TLD, not a country-code TLD; {serves}"
    if iana_type is not None:
        # IANA's generic, sponsored and restricted-generic TLDs are all generic TLDs.
        return f"{shown} is a generic TLD, not a country-code TLD; {serves}"
    if len(a_label) == 2:
        return f"{shown} is not a delegated country-code TLD; check the spelling (like .nl or .рф)"
    return f"{shown} is not a delegated TLD; {serves}"


@functools.cache
def _document() -> dict[str, object]:
    raw = resources.files("secir_bot").joinpath("data").joinpath("cctlds.json").read_text("utf-8")
    document: dict[str, object] = json.loads(raw)
    return document


@functools.cache
def _other_tlds() -> dict[str, str]:
    """Every delegated TLD that is not a ccTLD -> its IANA type (generic, sponsored, ...)."""
    others = _document().get("other_tlds") or {}
    assert isinstance(others, dict)
    return {label: kind for kind, labels in others.items() for label in labels}


@functools.cache
def _table() -> dict[str, CcTld]:
    """Load the shipped table once, keyed by A-label and sorted by it."""
    rows = _document()["cctlds"]
    assert isinstance(rows, list)
    table: dict[str, CcTld] = {}
    for row in sorted(rows, key=lambda row: row["a_label"]):
        kind = row["kind"]
        if kind not in ("ascii", "idn"):
            raise RuntimeError(f"cctlds.json: {row['a_label']!r} has unknown kind {kind!r}")
        table[row["a_label"]] = CcTld(
            a_label=row["a_label"],
            u_label=row["u_label"],
            iso3166=row["iso3166"],
            country=row["country"],
            kind=kind,
        )
    return table
