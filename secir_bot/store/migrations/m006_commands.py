"""Migration 006_commands.

The command machinery: audit log, confirmations, cases and nominees, effects.

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

NAME = "006_commands"


def apply(db: sqlite_utils.Database) -> None:
    # The command machinery (issue 9): the hash-chained audit log, pending confirmations,
    # and the subscription cases with their nominees. Plain SQL, for the triggers and the
    # partial index that sqlite-utils' helpers cannot express.
    for statement in (
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,"
        " action TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL,"
        " evidence TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL)",
        # Append-only against mistakes in our own code (an attacker with the file can drop
        # the triggers: the hash chain and an outside anchor catch that).
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TABLE confirmations (code_hash TEXT PRIMARY KEY, actor TEXT NOT NULL,"
        " front TEXT NOT NULL, command TEXT NOT NULL, args TEXT NOT NULL,"
        " created_at REAL NOT NULL, expires_at REAL NOT NULL, used_at REAL)",
        "CREATE TABLE cases (id INTEGER PRIMARY KEY, tld TEXT NOT NULL, state TEXT NOT NULL,"
        " contact_email TEXT NOT NULL, contact_org TEXT NOT NULL, contact_source TEXT NOT NULL,"
        " override_reason TEXT, whois_sha256 TEXT, code_hash TEXT NOT NULL,"
        " opened_by TEXT NOT NULL, opened_at REAL NOT NULL, expires_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, closed_by TEXT, closed_at REAL, close_reason TEXT,"
        " nomination_ref TEXT)",
        # At most one open case per ccTLD.
        "CREATE UNIQUE INDEX cases_open_tld ON cases (tld)"
        " WHERE state IN ('invited', 'nominated', 'ready')",
        "CREATE TABLE nominees (id INTEGER PRIMARY KEY,"
        " case_id INTEGER NOT NULL REFERENCES cases (id), position INTEGER NOT NULL,"
        " name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT, fingerprint TEXT NOT NULL,"
        " key TEXT NOT NULL, matrix_id TEXT, timezone TEXT, languages TEXT NOT NULL,"
        " challenge_hash TEXT NOT NULL, key_proven_at REAL, proof_ref TEXT,"
        " matrix_joined_at REAL, UNIQUE (case_id, position))",
        # The effects of each committed change (mail to send, invitations, removals), kept
        # in the change's transaction until a front end has carried them out.
        "CREATE TABLE command_effects (id INTEGER PRIMARY KEY, created_at REAL NOT NULL,"
        " actor TEXT NOT NULL, action TEXT NOT NULL, effect TEXT NOT NULL, done_at REAL)",
    ):
        db.execute(statement)
