"""What one check of ``secir-bot doctor`` found: a status, an area, a fact and its fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    status: Status
    area: str  # config, store, keyring, matrix, imap, smtp
    text: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix and self.status is not Status.OK else ""
        return f"{self.status:<4}  {self.area:<7} {self.text}{fix}"


def ok(area: str, text: str) -> Check:
    return Check(Status.OK, area, text)


def warn(area: str, text: str, fix: str = "") -> Check:
    return Check(Status.WARN, area, text, fix)


def fail(area: str, text: str, fix: str = "") -> Check:
    return Check(Status.FAIL, area, text, fix)
