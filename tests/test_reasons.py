"""Reason codes: every code a step can return has its English text, and the texts read as
they did when the steps wrote them out (the tests of the rejections assert on them)."""

from __future__ import annotations

import ast
from pathlib import Path

from secir_bot.model import DeviceVerdict
from secir_bot.steps import drop, reasons, reject

STEPS = Path(__file__).resolve().parent.parent / "secir_bot" / "steps"


def _codes_used() -> set[str]:
    codes = set()
    for path in STEPS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("drop", "reject")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                codes.add(str(node.args[0].value))
    return codes


def test_every_code_a_step_returns_has_an_english_text() -> None:
    used = _codes_used()
    assert len(used) > 30  # the steps were read
    assert not used - set(reasons.ENGLISH)


def test_every_device_verdict_but_trusted_has_its_reason() -> None:
    for verdict in DeviceVerdict:
        if verdict is not DeviceVerdict.TRUSTED:
            assert f"device-{verdict}" in reasons.ENGLISH


def test_texts_are_filled_from_the_parameters() -> None:
    assert reject("too-large", limit=1000).reason == (
        "the mail is larger than the list's limit of 1000 bytes"
    )
    assert reject("signed-in-future", minutes=59.6, skew=600.0).reason == (
        "the signature is dated 60 minutes in the future; the list accepts at most 600 "
        "seconds of clock difference (check your computer's clock)"
    )
    assert drop("automated", why="auto-reply (X-Autoreply)").reason == "auto-reply (X-Autoreply)"
    assert reject("device-identity-changed").reason == (
        "the sender's Matrix identity (cross-signing keys) changed and waits for an admin to "
        "confirm it; the message is not relayed"
    )
