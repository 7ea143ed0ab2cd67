"""config.example.toml documents every configuration key, and its placeholders are refused.

The list of keys is not written down here: it is observed. The example is parsed, its
placeholders are replaced by valid values, and ``config.parse`` reads the result through
dictionaries that record every key it looks up. Every key read must then be in the example
(as a setting or as a commented-out alternative such as ``# password_env = ...``), and every
key in the example must be one that ``parse`` reads. A key added to config.py without an
entry in the example, or left in the example after config.py stopped reading it, fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from secir_bot import config
from secir_bot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"

# What a placeholder looks like (the same rule config.py applies to string values).
_PLACEHOLDER = re.compile(r"CHANGE-ME|(^|[.@:])example\.(org|com|net)\b", re.IGNORECASE)

# Valid values for the example's placeholders, by dotted key (list items as key[i]).
REAL_VALUES: dict[str, str] = {
    "list.address": "secir@lists.registry.test",
    "list.list_id": "secir.lists.registry.test",
    "list.owner": "secir-owner@registry.test",
    "matrix.homeserver": "https://matrix.registry.test",
    "matrix.user_id": "@secir-bot:registry.test",
    "matrix.incident_room": "!incidents:registry.test",
    "matrix.control_room": "!control:registry.test",
    "matrix.admins[0]": "@admin:registry.test",
    "imap.host": "imap.registry.test",
    "imap.username": "secir@lists.registry.test",
    "smtp.host": "smtp.registry.test",
    "smtp.username": "secir@lists.registry.test",
}

_SECTION = re.compile(r"^\[([A-Za-z0-9_.-]+)\]\s*(#.*)?$")
_COMMENTED_KEY = re.compile(r"^#\s*([a-z][a-z0-9_]*)\s*=")


class Recording(dict[str, Any]):
    """A TOML table that notes the dotted name of every key looked up in it."""

    def __init__(self, data: dict[str, Any], prefix: str, seen: set[str]) -> None:
        super().__init__({k: _wrap(v, f"{prefix}{k}", seen) for k, v in data.items()})
        self._prefix = prefix
        self._seen = seen

    def __contains__(self, key: object) -> bool:
        self._seen.add(f"{self._prefix}{key}")
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        self._seen.add(f"{self._prefix}{key}")
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(f"{self._prefix}{key}")
        return super().get(key, default)


def _wrap(value: Any, name: str, seen: set[str]) -> Any:
    return Recording(value, f"{name}.", seen) if isinstance(value, dict) else value


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every setting (tables flattened, lists kept whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _placeholders(data: dict[str, Any]) -> dict[str, str]:
    """Dotted key (``key[i]`` for list items) -> placeholder value."""
    found: dict[str, str] = {}
    for key, value in _leaves(data).items():
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if isinstance(item, str) and _PLACEHOLDER.search(item):
                found[key if i is None else f"{key}[{i}]"] = item
    return found


def _commented_keys(text: str) -> set[str]:
    """Dotted keys that appear only as commented-out settings (``# password_env = ...``)."""
    section = ""
    keys = set()
    for line in text.splitlines():
        if m := _SECTION.match(line.strip()):
            section = m.group(1) + "."
        elif m := _COMMENTED_KEY.match(line.strip()):
            keys.add(section + m.group(1))
    return keys


def _replace_in(table: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key] = _replace_in(value, f"{name}.")
        elif isinstance(value, list):
            out[key] = [REAL_VALUES.get(f"{name}[{i}]", item) for i, item in enumerate(value)]
        else:
            out[key] = REAL_VALUES.get(name, value)
    return out


@pytest.fixture
def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


@pytest.fixture
def valid(example: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The example with real values, and its secret files created under ``tmp_path``."""
    data = _replace_in(example, "")
    for key, value in _leaves(data).items():
        if key.endswith("_file"):
            secret = tmp_path / value
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.write_text("not-a-real-password\n", encoding="utf-8")
    return data, tmp_path / "config.toml"


def test_every_placeholder_has_a_real_value_in_this_test(example: dict[str, Any]) -> None:
    missing = sorted(set(_placeholders(example)) - set(REAL_VALUES))
    assert not missing, f"add valid values for these placeholders to REAL_VALUES: {missing}"
    stale = sorted(set(REAL_VALUES) - set(_placeholders(example)))
    assert not stale, f"REAL_VALUES names keys that are no placeholders in the example: {stale}"


def test_the_example_with_real_values_loads(valid: tuple[dict[str, Any], Path]) -> None:
    data, path = valid
    cfg = config.parse(data, path)
    assert cfg.list.address == REAL_VALUES["list.address"]
    assert cfg.store_path == (path.parent / "store").resolve()
    assert cfg.imap.password.read() == "not-a-real-password"


def test_every_key_that_parse_reads_is_in_the_example(
    example: dict[str, Any], valid: tuple[dict[str, Any], Path]
) -> None:
    data, path = valid
    seen: set[str] = set()
    config.parse(Recording(data, "", seen), path)
    read = {k for k in seen if "." in k}  # top-level lookups are the sections themselves
    # A secret is looked up as `x` (to refuse it inline), `x_file` and `x_env`.
    inline_secrets = {k for k in read if f"{k}_file" in read and f"{k}_env" in read}
    settings = set(_leaves(example))
    documented = settings | _commented_keys(EXAMPLE.read_text(encoding="utf-8"))

    assert not (settings & inline_secrets), "passwords must never be written in the example"
    undocumented = sorted(read - inline_secrets - documented)
    assert not undocumented, f"config.parse reads keys the example does not show: {undocumented}"
    unknown = sorted(documented - read)
    assert not unknown, f"the example shows keys config.parse never reads: {unknown}"


def test_optional_settings_in_the_example_are_the_defaults(
    example: dict[str, Any], valid: tuple[dict[str, Any], Path]
) -> None:
    """Leaving out any optional key of the example must not change the configuration."""
    data, path = valid
    full = config.parse(data, path)
    placeholders = set(_placeholders(example))
    for key in _leaves(example):
        if key in placeholders or key.endswith(("_file", "_env")):
            continue  # values the admin must set (or secrets, which have no default)
        section, name = key.split(".", 1)
        trimmed = {s: dict(t) for s, t in data.items()}
        del trimmed[section][name]
        try:
            without = config.parse(trimmed, path)
        except ConfigError:
            continue  # a required key: it has no default to compare with
        assert without == full, f"{key} in the example is not its default"


def test_the_example_as_it_is_is_refused_naming_each_placeholder(
    example: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = caught.value.problems
    placeholder_keys = _placeholders(example)
    assert placeholder_keys, "the example has no placeholders at all"
    for key, value in placeholder_keys.items():
        assert any(p.startswith(f"{key}:") for p in problems), (
            f"{key} = {value!r} is not refused; problems were: {problems}"
        )
    named = {p.split(":", 1)[0] for p in problems}
    assert "list.address" in named
    assert "matrix.admins[0]" in named
