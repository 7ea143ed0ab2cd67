"""The admin manual's list of steps (section 8) is the pipeline's, name for name, in order.

Written out by hand in the manual, it would drift from ``pipeline.py`` unnoticed; this test
fails when a step is added, removed, renamed or moved without the manual saying so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secir_bot.pipeline import EMAIL_STEPS, MATRIX_STEPS, POLICY_STEPS, REQUEST_STEPS, Stage

MANUAL = Path(__file__).resolve().parent.parent / "docs" / "admin-manual.md"
# The bold lead-in of each list in section 8, and the stage the list documents.
LISTS: dict[str, Stage] = {  # type: ignore[type-arg]
    "**Mail to the list**": EMAIL_STEPS,
    "**Mail to the request address**": REQUEST_STEPS,
    "**Events in the incident room**": MATRIX_STEPS,
    "**Every message, from either channel**": POLICY_STEPS,
}
_ITEM = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)
_MORE = re.compile(r"\b\d+\. `(\w+)`")  # further steps on the same line ("5. `a`, 6. `b`")


def _section_8() -> str:
    text = MANUAL.read_text(encoding="utf-8")
    start = text.index("## 8. How the bot decides")
    return text[start : text.index("\n## 9.", start)]


def _listed(lead: str) -> list[str]:
    """The step names of the numbered list that follows ``lead``, in order."""
    section = _section_8()
    lines = section[section.index(lead) :].splitlines()[1:]
    names: list[str] = []
    for line in lines:
        item = _ITEM.match(line)
        if item or (names and line.startswith("   ")):
            names.extend(_MORE.findall(line))
        elif line.strip() and not line.startswith("   ") and names:
            break  # the paragraph after the list
    return names


@pytest.mark.parametrize("lead", list(LISTS))
def test_the_manual_lists_every_step_in_order(lead: str) -> None:
    assert _listed(lead) == [step.__name__ for step in LISTS[lead].steps]
