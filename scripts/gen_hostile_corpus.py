"""Write the hostile mail corpus (tests/corpus/hostile/) from its builders.

The static cases need no key and are written as files with a MANIFEST.json of what each
must end as; the cases that need the keys of a test world are built by the test itself
(``secir_bot.sandbox.hostile.crypto_cases``). Deterministic: running it again changes
nothing. Usage: python scripts/gen_hostile_corpus.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from secir_bot.sandbox.hostile import write_corpus

TARGET = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "hostile"


def main() -> None:
    if TARGET.exists():
        shutil.rmtree(TARGET)
    count = write_corpus(TARGET)
    print(f"{count} cases written to {TARGET.relative_to(TARGET.parents[2])}")


if __name__ == "__main__":
    main()
