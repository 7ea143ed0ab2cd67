"""Configuration: one TOML file -> frozen dataclasses, validated once.

Every problem is collected and reported by its dotted key, so an admin fixes the whole
file in one go. The example file's placeholder values are refused, and secrets are never
inline: each password comes from a file (``password_file``) or an environment variable
(``password_env``).

Some settings are allowed but risky (plain IMAP or SMTP to another host, an ``http://``
homeserver that is not on this machine, a password file other users can read): they are
collected in ``Config.warnings``, which ``check-config``, ``doctor`` and ``run`` show.

base.py       the reader (typed values by dotted key, secrets, CA files) and value checks
sections.py   one frozen dataclass and one reader per section of the file
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secir_bot.config.base import Reader, Secret, check_path, check_positive, is_loopback
from secir_bot.config.sections import (
    CommandsConfig,
    CryptoConfig,
    DeliveryConfig,
    ImapConfig,
    ListConfig,
    MatrixConfig,
    SmtpConfig,
    WhoisConfig,
    read_commands,
    read_crypto,
    read_delivery,
    read_imap,
    read_list,
    read_matrix,
    read_smtp,
    transport_warnings,
)
from secir_bot.errors import ConfigError

__all__ = [
    "CommandsConfig",
    "Config",
    "CryptoConfig",
    "DeliveryConfig",
    "ImapConfig",
    "ListConfig",
    "MatrixConfig",
    "Secret",
    "SmtpConfig",
    "WhoisConfig",
    "is_loopback",
    "load",
    "parse",
]

SECTIONS = ("store", "list", "matrix", "imap", "smtp", "delivery", "commands", "whois", "crypto")


@dataclass(frozen=True)
class Config:
    path: Path
    store_path: Path
    list: ListConfig
    matrix: MatrixConfig
    imap: ImapConfig
    smtp: SmtpConfig
    delivery: DeliveryConfig
    warnings: tuple[str, ...] = ()
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    whois: WhoisConfig = field(default_factory=WhoisConfig)
    # Days after which the raw bytes of decided messages and the payloads of sent deliveries
    # are erased from the store (decisions, posts and links stay).
    retention_days: float = 30.0
    crypto: CryptoConfig = field(default_factory=CryptoConfig)


def parse(data: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; raise ``ConfigError`` listing every problem."""
    r = Reader(data, path.parent)
    r.problems.extend(f"{k}: unknown section" for k in data if k not in SECTIONS)

    store = r.value("store.path", str, "store", check=check_path)
    retention_days = r.value("store.retention_days", float, 30.0, check=check_positive)
    lst = read_list(r)
    mx = read_matrix(r)
    imap = read_imap(r)
    smtp = read_smtp(r)
    delivery = read_delivery(r)
    crypto = read_crypto(r)
    r.warnings.extend(transport_warnings(mx, imap, smtp))
    commands, whois = read_commands(r)
    for section, table in data.items():
        if section in SECTIONS and isinstance(table, dict):
            r.problems.extend(
                f"{section}.{key}: unknown key" for key in table if f"{section}.{key}" not in r.read
            )
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        path=path,
        store_path=(path.parent / store).resolve(),
        list=lst,
        matrix=mx,
        imap=imap,
        smtp=smtp,
        delivery=delivery,
        warnings=tuple(r.warnings),
        commands=commands,
        whois=whois,
        retention_days=retention_days,
        crypto=crypto,
    )


def load(path: Path) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    return parse(data, path.resolve())
