"""The store's schema history: one module per migration, applied in this order.

Append only: a migration, once released, is never edited or reordered. The ``_migrations``
table records each by its name, so a name never changes either. A new migration is a new
module ``mNNN_what.py`` (``NAME`` and ``apply(db)``) and one line at the end of the tuple.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from secir_bot.store.migrations import (
    m001_initial,
    m002_inbox_attempts,
    m003_signatures,
    m004_inbox_digest,
    m005_cross_signing,
    m006_commands,
    m007_rate_limits,
    m008_media,
)

Migration = tuple[str, Callable[[sqlite_utils.Database], None]]

MIGRATIONS: tuple[Migration, ...] = tuple(
    (m.NAME, m.apply)
    for m in (
        m001_initial,
        m002_inbox_attempts,
        m003_signatures,
        m004_inbox_digest,
        m005_cross_signing,
        m006_commands,
        m007_rate_limits,
        m008_media,
    )
)
