"""A hostile mail corpus: builders for malformed and malicious mail to the list.

Static cases need no key: ``scripts/gen_hostile_corpus.py`` writes them to
``tests/corpus/hostile/`` (deterministic), with placeholders for the addresses of the test
world that receives them. Cases that must be encrypted to the list key of a test world, or
signed by its members, are built at test time by ``crypto_cases`` (no ciphertext is
stored). Every case is a mail that must end rejected or dropped, with its reason; each
carries an ``X-Corpus-Case`` first line and a marker word in its text, so the test can
find its inbox item and check that nothing of it was relayed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from secir_bot.sandbox.hostile.base import MARKER, Case
from secir_bot.sandbox.hostile.keyed import crypto_cases
from secir_bot.sandbox.hostile.static import static_cases

__all__ = ["MARKER", "Case", "crypto_cases", "read_corpus", "static_cases", "write_corpus"]


def write_corpus(directory: Path) -> int:
    """Write every static case as ``<name>.eml`` and ``MANIFEST.json``; return the count."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for case in static_cases():
        (directory / f"{case.name}.eml").write_bytes(case.data)
        entry = asdict(case)
        del entry["data"]
        manifest[case.name] = entry
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return len(manifest)


def read_corpus(directory: Path) -> list[Case]:
    manifest = json.loads((directory / "MANIFEST.json").read_text())
    return [
        Case(name, (directory / f"{name}.eml").read_bytes(), e["outcome"], tuple(e["reasons"]))
        for name, e in sorted(manifest.items())
    ]
