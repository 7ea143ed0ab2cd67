"""The examples in the package's docstrings are run, so that they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import secir_bot

# Every module of the package but the entry point (which runs the program when imported) and
# the sandbox (test support, with no examples).
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(secir_bot.__path__, "secir_bot.")
    if ".sandbox" not in m.name and m.name != "secir_bot.__main__"
)


@pytest.mark.parametrize("name", ["secir_bot.cctld", "secir_bot.validate"])
def test_the_modules_with_examples_have_them_run(name: str) -> None:
    assert doctest.testmod(importlib.import_module(name)).attempted >= 3


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
