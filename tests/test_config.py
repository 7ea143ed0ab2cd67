"""Tests for secir_bot.config: a good file loads, and a bad one names every problem at once.

Each test writes a TOML file (and the password files it points to) into ``tmp_path``; the
``write`` fixture renders a plain dict so a test states only what it changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secir_bot.config import Config, Secret, load, parse
from secir_bot.errors import ConfigError

IMAP_ENV = "SECIR_TEST_IMAP_PASSWORD"

Data = dict[str, dict[str, Any]]


def valid_data() -> Data:
    """A complete, valid configuration (the password files are made by ``write``)."""
    return {
        "store": {"path": "state"},
        "list": {
            "name": "SECIR",
            "address": "secir@lists.secir.test",
            "list_id": "secir.lists.secir.test",
            "owner": "owner@secir.test",
            "subject_tag": "SECIR",
            "echo_to_sender": True,
            "max_message_bytes": 1_000_000,
        },
        "matrix": {
            "homeserver": "https://matrix.secir.test",
            "user_id": "@secir-bot:secir.test",
            "password_file": "secrets/matrix.pw",
            "device_name": "secir-bot-prod",
            "incident_room": "!incidents:secir.test",
            "control_room": "!control:secir.test",
            "admins": ["@anna:nic.test", "@bram:registry.nl.test"],
            "undecryptable_report_after": 120,
        },
        "imap": {
            "host": "imap.secir.test",
            "port": 993,
            "security": "tls",
            "username": "secir",
            "password_env": IMAP_ENV,
            "poll_interval": 30.5,
        },
        "smtp": {
            "host": "smtp.secir.test",
            "port": 587,
            "security": "starttls",
            "username": "secir",
            "password_file": "secrets/smtp.pw",
        },
        "delivery": {"retry_base": 2, "retry_max": 60.0, "give_up_after": 3600},
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def render(data: Data) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def conf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config directory with both password files, the IMAP password in the environment,
    and the working directory somewhere else (paths must not depend on it)."""
    directory = tmp_path / "etc" / "secir"
    (directory / "secrets").mkdir(parents=True)
    (directory / "secrets" / "matrix.pw").write_text("matrix-secret\n", encoding="utf-8")
    (directory / "secrets" / "smtp.pw").write_text("  smtp-secret  \n", encoding="utf-8")
    monkeypatch.setenv(IMAP_ENV, "imap-secret")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return directory


@pytest.fixture
def write(conf_dir: Path) -> Callable[[Data], Path]:
    def _write(data: Data) -> Path:
        path = conf_dir / "secir.toml"
        path.write_text(render(data), encoding="utf-8")
        return path

    return _write


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


def keys_of(problems: list[str]) -> set[str]:
    """The dotted keys that problems are reported under (the text before the first ': ')."""
    return {p.split(": ", 1)[0] for p in problems}


# -- a valid file ------------------------------------------------------------------------


def test_valid_config_loads(write: Callable[[Data], Path], conf_dir: Path) -> None:
    config = load(write(valid_data()))

    assert isinstance(config, Config)
    assert config.path == conf_dir / "secir.toml"
    assert config.list.address == "secir@lists.secir.test"
    assert config.list.domain == "lists.secir.test"
    assert config.list.echo_to_sender is True
    assert config.list.max_message_bytes == 1_000_000
    assert config.matrix.admins == ("@anna:nic.test", "@bram:registry.nl.test")
    assert config.matrix.undecryptable_report_after == 120.0
    assert isinstance(config.matrix.undecryptable_report_after, float)
    assert config.imap.port == 993
    assert config.imap.poll_interval == 30.5
    assert config.imap.mailbox == "INBOX"  # a default
    assert config.smtp.username == "secir"
    assert config.smtp.max_recipients == 100  # a default
    assert config.delivery.retry_base == 2.0
    assert config.delivery.give_up_after == 3600.0


def test_secrets_come_from_files_and_the_environment(
    write: Callable[[Data], Path], conf_dir: Path
) -> None:
    config = load(write(valid_data()))

    assert config.matrix.password == Secret(file=conf_dir / "secrets" / "matrix.pw")
    assert config.matrix.password.read() == "matrix-secret"
    assert config.smtp.password.read() == "smtp-secret"  # surrounding whitespace dropped
    assert config.imap.password == Secret(env=IMAP_ENV)
    assert config.imap.password.read() == "imap-secret"
    assert config.imap.password.configured


def test_relative_paths_resolve_against_the_config_directory(
    write: Callable[[Data], Path], conf_dir: Path, tmp_path: Path
) -> None:
    data = valid_data()
    data["store"]["path"] = "../state"
    data["smtp"]["password_file"] = "./secrets/../secrets/smtp.pw"

    config = load(write(data))

    assert Path.cwd() == tmp_path / "elsewhere"
    assert config.store_path == (tmp_path / "etc" / "state").resolve()
    assert config.smtp.password.file == (conf_dir / "secrets" / "smtp.pw").resolve()


def test_absolute_store_path_is_kept(write: Callable[[Data], Path], tmp_path: Path) -> None:
    data = valid_data()
    data["store"]["path"] = str(tmp_path / "var" / "secir")

    assert load(write(data)).store_path == tmp_path / "var" / "secir"


def test_defaults_fill_optional_sections(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    del data["delivery"], data["store"]
    del data["smtp"]["username"], data["smtp"]["password_file"]
    del data["matrix"]["password_file"]

    config = load(write(data))

    assert config.store_path.name == "store"
    assert config.delivery.retry_max == 900.0
    assert config.smtp.username is None
    assert not config.smtp.password.configured  # no username, so no password needed
    assert not config.matrix.password.configured


def test_room_v12_ids_without_server_part_are_accepted(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrix"]["incident_room"] = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
    data["matrix"]["control_room"] = "!control:secir.test:8448"

    config = load(write(data))

    assert config.matrix.incident_room == "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
    assert config.matrix.control_room == "!control:secir.test:8448"


# -- every problem at once ---------------------------------------------------------------


def test_every_problem_is_reported_at_once(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["list"]["address"] = "not an address"
    data["imap"]["port"] = "993"
    data["smtp"]["security"] = "ssl"
    data["matrix"]["user_id"] = "secir-bot"
    data["delivery"]["retry_max"] = 0

    problems = problems_of(write(data))

    assert keys_of(problems) == {
        "list.address",
        "imap.port",
        "smtp.security",
        "matrix.user_id",
        "delivery.retry_max",
    }
    assert len(problems) == 5


def test_error_message_lists_each_problem_on_its_own_line(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["imap"]["port"] = 0
    data["smtp"]["port"] = 70000

    with pytest.raises(ConfigError) as info:
        load(write(data))

    assert str(info.value).splitlines() == [
        "invalid configuration:",
        "  - imap.port: not a TCP port",
        "  - smtp.port: not a TCP port",
    ]


def test_missing_required_keys_are_named(write: Callable[[Data], Path]) -> None:
    problems = problems_of(write({"list": {}, "matrix": {}, "imap": {}, "smtp": {}}))

    assert {
        "list.address: missing (required)",
        "list.list_id: missing (required)",
        "list.owner: missing (required)",
        "matrix.homeserver: missing (required)",
        "matrix.user_id: missing (required)",
        "matrix.incident_room: missing (required)",
        "matrix.control_room: missing (required)",
        "matrix.admins: name at least one admin",
        "imap.host: missing (required)",
        "imap.username: missing (required)",
        "imap.password_file or imap.password_env: missing (required)",
        "smtp.host: missing (required)",
    } <= set(problems)
    assert not any(p.startswith(("delivery.", "store.")) for p in problems)


def test_an_empty_file_reports_the_same_missing_keys(write: Callable[[Data], Path]) -> None:
    assert keys_of(problems_of(write({}))) >= {"list.address", "imap.host", "smtp.host"}


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("imap", "port", "993", "imap.port: expected int, got str"),
        ("imap", "port", 993.0, "imap.port: expected int, got float"),
        ("smtp", "max_recipients", True, "smtp.max_recipients: expected int, got bool"),
        ("list", "echo_to_sender", "yes", "list.echo_to_sender: expected bool, got str"),
        ("list", "max_message_bytes", "2MB", "list.max_message_bytes: expected int, got str"),
        ("delivery", "retry_base", "5", "delivery.retry_base: expected float, got str"),
        ("delivery", "retry_max", False, "delivery.retry_max: expected float, got bool"),
        ("matrix", "admins", "@anna:nic.test", "matrix.admins: expected list, got str"),
        ("list", "address", 42, "list.address: expected str, got int"),
    ],
)
def test_wrong_types_are_named(
    write: Callable[[Data], Path], section: str, key: str, value: Any, expected: str
) -> None:
    data = valid_data()
    data[section][key] = value

    assert expected in problems_of(write(data))


@pytest.mark.parametrize("port", [0, -1, 65536, 100_000])
def test_bad_ports_are_refused(write: Callable[[Data], Path], port: int) -> None:
    data = valid_data()
    data["imap"]["port"] = port
    data["smtp"]["port"] = port

    assert problems_of(write(data)) == ["imap.port: not a TCP port", "smtp.port: not a TCP port"]


@pytest.mark.parametrize("port", [1, 25, 65535])
def test_edge_ports_are_accepted(write: Callable[[Data], Path], port: int) -> None:
    data = valid_data()
    data["smtp"]["port"] = port

    assert load(write(data)).smtp.port == port


@pytest.mark.parametrize(
    ("imap_security", "smtp_security", "expected"),
    [
        ("starttls", "starttls", ["imap.security: must be tls or plain"]),
        ("ssl", "tls", ["imap.security: must be tls or plain"]),
        ("tls", "ssl", ["smtp.security: must be one of tls, starttls, plain"]),
        (
            "TLS",
            "STARTTLS",
            [
                "imap.security: must be tls or plain",
                "smtp.security: must be one of tls, starttls, plain",
            ],
        ),
    ],
)
def test_bad_security_values_are_refused(
    write: Callable[[Data], Path], imap_security: str, smtp_security: str, expected: list[str]
) -> None:
    data = valid_data()
    data["imap"]["security"] = imap_security
    data["smtp"]["security"] = smtp_security

    assert problems_of(write(data)) == expected


@pytest.mark.parametrize(
    ("imap_security", "smtp_security"), [("plain", "plain"), ("tls", "tls"), ("plain", "starttls")]
)
def test_good_security_values_are_accepted(
    write: Callable[[Data], Path], imap_security: str, smtp_security: str
) -> None:
    data = valid_data()
    data["imap"]["security"] = imap_security
    data["smtp"]["security"] = smtp_security

    config = load(write(data))

    assert (config.imap.security, config.smtp.security) == (imap_security, smtp_security)


@pytest.mark.parametrize(
    "user_id",
    [
        "secir-bot",
        "@secir-bot",
        "secir-bot:secir.test",
        "@Secir-Bot:secir.test",
        "@secir bot:secir.test",
        "#secir:secir.test",
    ],
)
def test_bad_matrix_user_ids_are_refused(write: Callable[[Data], Path], user_id: str) -> None:
    data = valid_data()
    data["matrix"]["user_id"] = user_id

    assert problems_of(write(data)) == [
        f"matrix.user_id: not a Matrix user id (@name:server): {user_id!r}"
    ]


def test_bad_admins_are_named_by_index(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrix"]["admins"] = ["@anna:nic.test", "bram", "@carol:nic.test", "@:x"]

    assert problems_of(write(data)) == [
        "matrix.admins[1]: not a Matrix user id: 'bram'",
        "matrix.admins[3]: not a Matrix user id: '@:x'",
    ]


def test_an_empty_admin_list_is_refused(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrix"]["admins"] = []

    assert problems_of(write(data)) == ["matrix.admins: name at least one admin"]


@pytest.mark.parametrize(
    "room",
    [
        "#incidents:secir.test",
        "incidents:secir.test",
        "!",
        "!in cidents:secir.test",
        "!incidents:",
        "@anna:nic.test",
    ],
)
def test_bad_room_ids_are_refused(write: Callable[[Data], Path], room: str) -> None:
    data = valid_data()
    data["matrix"]["incident_room"] = room

    assert problems_of(write(data)) == [
        f"matrix.incident_room: not a Matrix room id (!id or !id:server): {room!r}"
    ]


@pytest.mark.parametrize(
    "room", ["!incidents:secir.test", "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"]
)
def test_incident_room_must_differ_from_control_room(
    write: Callable[[Data], Path], room: str
) -> None:
    data = valid_data()
    data["matrix"]["incident_room"] = room
    data["matrix"]["control_room"] = room

    assert problems_of(write(data)) == [
        "matrix.control_room: must differ from matrix.incident_room"
    ]


def test_homeserver_must_be_an_http_url(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrix"]["homeserver"] = "matrix.secir.test"

    assert problems_of(write(data)) == ["matrix.homeserver: not an http(s) URL"]


@pytest.mark.parametrize(("key", "value"), [("max_message_bytes", 0), ("max_message_bytes", -5)])
def test_sizes_must_be_positive(write: Callable[[Data], Path], key: str, value: int) -> None:
    data = valid_data()
    data["list"][key] = value

    assert problems_of(write(data)) == [f"list.{key}: must be greater than 0"]


def test_caption_wait_defaults_to_20_s_may_be_0_and_never_negative(
    write: Callable[[Data], Path],
) -> None:
    data = valid_data()
    assert load(write(data)).matrix.caption_wait_seconds == 20.0
    data["matrix"]["caption_wait_seconds"] = 0
    assert load(write(data)).matrix.caption_wait_seconds == 0.0
    data["matrix"]["caption_wait_seconds"] = -1
    assert problems_of(write(data)) == ["matrix.caption_wait_seconds: must be 0 or more"]


# -- secrets -----------------------------------------------------------------------------


def test_inline_password_is_refused_without_echoing_it(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["imap"]["password"] = "hunter2-inline"

    with pytest.raises(ConfigError) as info:
        load(write(data))

    assert info.value.problems == [
        "imap.password: passwords are never written in the config; "
        "use password_file or password_env"
    ]
    assert "hunter2-inline" not in str(info.value)


def test_inline_password_is_refused_even_where_a_password_is_optional(
    write: Callable[[Data], Path],
) -> None:
    data = valid_data()
    del data["matrix"]["password_file"]
    data["matrix"]["password"] = "s3cret"

    assert keys_of(problems_of(write(data))) == {"matrix.password"}


def test_password_file_and_env_together_are_refused(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["smtp"]["password_env"] = IMAP_ENV

    assert problems_of(write(data)) == [
        "smtp.password_file / smtp.password_env: give one of them, not both"
    ]


def test_missing_password_file_is_named(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["smtp"]["password_file"] = "secrets/nope.pw"

    assert problems_of(write(data)) == ["smtp.password_file: no such file: secrets/nope.pw"]


def test_password_file_is_not_looked_up_in_the_working_directory(
    write: Callable[[Data], Path], tmp_path: Path
) -> None:
    (tmp_path / "elsewhere" / "cwd.pw").write_text("x", encoding="utf-8")
    data = valid_data()
    data["smtp"]["password_file"] = "cwd.pw"

    assert problems_of(write(data)) == ["smtp.password_file: no such file: cwd.pw"]


def test_unset_password_env_is_named(
    write: Callable[[Data], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(IMAP_ENV)

    assert problems_of(write(valid_data())) == [
        f"imap.password_env: environment variable {IMAP_ENV} is not set"
    ]


def test_smtp_username_requires_a_password(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    del data["smtp"]["password_file"]

    assert problems_of(write(data)) == [
        "smtp.password_file or smtp.password_env: missing (required)"
    ]


# -- sections and placeholders -----------------------------------------------------------


def test_unknown_section_is_refused(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrx"] = {"homeserver": "https://matrix.secir.test"}

    assert problems_of(write(data)) == ["matrx: unknown section"]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("imap", "host", "CHANGE-ME"),
        ("smtp", "host", "smtp.CHANGE-ME.test"),
        ("list", "address", "secir@lists.example.org"),
        ("list", "owner", "owner@example.com"),
        ("list", "list_id", "secir.example.net"),
        ("matrix", "homeserver", "https://matrix.example.org"),
        ("matrix", "user_id", "@secir-bot:example.org"),
        ("matrix", "incident_room", "!incidents:example.org"),
    ],
)
def test_example_placeholders_are_refused(
    write: Callable[[Data], Path], section: str, key: str, value: str
) -> None:
    data = valid_data()
    data[section][key] = value

    assert problems_of(write(data)) == [
        f"{section}.{key}: still the example's placeholder value {value!r}"
    ]


@pytest.mark.parametrize("key", ["password_file", "password_env"])
def test_placeholder_secret_locations_are_refused(write: Callable[[Data], Path], key: str) -> None:
    data = valid_data()
    del data["imap"]["password_env"]
    data["imap"][key] = "CHANGE-ME"

    assert keys_of(problems_of(write(data))) == {f"imap.{key}"}


def test_bare_example_homeserver_is_refused(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrix"]["homeserver"] = "https://example.org"

    assert keys_of(problems_of(write(data))) == {"matrix.homeserver"}


def test_example_admins_are_refused(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["matrix"]["admins"] = ["@admin:example.org"]

    assert keys_of(problems_of(write(data))) == {"matrix.admins[0]"}


def test_words_that_merely_contain_example_are_fine(write: Callable[[Data], Path]) -> None:
    data = valid_data()
    data["list"]["name"] = "counterexample.org watchers"
    data["imap"]["host"] = "imap.myexample.organisation.test"

    config = load(write(data))

    assert config.imap.host == "imap.myexample.organisation.test"


# -- reading the file --------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.toml")

    assert len(info.value.problems) == 1
    assert "cannot read" in info.value.problems[0]


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[list\naddress = ", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load(path)

    assert "not valid TOML" in info.value.problems[0]


def test_parse_takes_a_document_and_a_path(conf_dir: Path) -> None:
    config = parse(valid_data(), conf_dir / "virtual.toml")

    assert config.store_path == (conf_dir / "state").resolve()


def test_the_shipped_example_is_refused_key_by_key() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"

    keys = keys_of(problems_of(example))

    assert {
        "list.address",
        "list.list_id",
        "list.owner",
        "matrix.homeserver",
        "matrix.user_id",
        "matrix.incident_room",
        "matrix.control_room",
        "imap.host",
        "smtp.host",
    } <= keys


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("list", "address", "secir@nic.test\n"),
        ("list", "owner", "owner@nic.test\r\nBcc: x@evil.test"),
        ("list", "address", "sec\x00ir@nic.test"),
        ("matrix", "user_id", "@bot:nic.test\n"),
        ("matrix", "incident_room", "!abc\x07:nic.test"),
    ],
)
def test_control_characters_in_addresses_are_refused(
    write: Callable[[Data], Path], section: str, key: str, value: str
) -> None:
    data = valid_data()
    data[section][key] = value

    assert any(
        p.startswith(f"{section}.{key}: ") and "control character" in p
        for p in problems_of(write(data))
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("store", "path"),
        ("matrix", "password_file"),
        ("smtp", "password_file"),
        ("commands", "keyring"),
        ("imap", "ca_file"),
    ],
)
def test_a_nul_character_in_a_file_name_is_a_problem_not_a_crash(
    conf_dir: Path, section: str, key: str
) -> None:
    # The property test found it: pathlib raises ValueError on "\x00" when it resolves.
    data = valid_data()
    data.setdefault(section, {})[key] = "secrets/\x00pw"

    with pytest.raises(ConfigError) as info:
        parse(data, conf_dir / "virtual.toml")

    assert any(p.startswith(f"{section}.{key}") for p in info.value.problems)
