"""The database under the store: one SQLite file (WAL) in the data folder, its schema,
and the connection every query goes through. A damaged file (``PRAGMA quick_check``, or
SQLite's own errors) stops every later use with :class:`StoreDamaged`; a full disk is
:class:`StoreFull` (an ``OSError``, ENOSPC). Another database (PostgreSQL) replaces this
module's connection and dialect; the queries live in :mod:`app.store.repository`.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from pathlib import Path
from typing import Iterator

from app.store.records import FIELDS

log = logging.getLogger("pneumo.app")

#: The database file in the data folder.
DATABASE_NAME = "pneumo.sqlite3"


class StoreDamaged(Exception):
    """The results database is damaged: nothing more is read from or written to it until
    it is restored from a backup (``pneumo restore``). The message is the database's own
    (no patient data)."""

    code = "database_damaged"
    http_status = 503

    def __str__(self) -> str:
        return (f"The results database is damaged ({self.args[0]}). Nothing is read or "
                "written until an administrator restores it from a backup "
                "(pneumo restore; README, Backup and restore).")


class StoreFull(OSError):
    """The disk under the store is full (the database could not write)."""

    def __init__(self, reason: str):
        super().__init__(errno.ENOSPC, f"the disk under the results is full ({reason})")


def _is_full(exc: sqlite3.DatabaseError) -> bool:
    return "disk is full" in str(exc).lower()


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """True for the errors of a damaged file (not a busy or locked one, not a constraint)."""
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
        return False
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in text \
        or "not a database" in text or "no such table" in text

SCHEMA = ("CREATE TABLE IF NOT EXISTS results (\n    "
          + ",\n    ".join(f"{f.name} {f.sql}" for f in FIELDS)
          + "\n);\nCREATE INDEX IF NOT EXISTS results_owner ON results(owner, created);\n" + """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    files INTEGER NOT NULL,
    errors TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,     -- SHA-256 of the id kept in the signed cookie
    subject TEXT NOT NULL,        -- user:<id>, or "password" (the shared access password)
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_counters (
    key TEXT PRIMARY KEY,         -- limit and who: an address or an account
    count INTEGER NOT NULL,
    expires REAL NOT NULL         -- end of the counting window
);
CREATE TABLE IF NOT EXISTS pacs_sends (
    result_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,          -- queued | sending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated REAL NOT NULL,
    sent_at REAL,
    seg_sop_uid TEXT
);
CREATE INDEX IF NOT EXISTS pacs_sends_state ON pacs_sends(state, updated);
""")


class Database:
    """The SQLite file ``path``: its schema, its integrity and its connections."""

    def __init__(self, path: str | Path):
        self._db_path = Path(path)
        #: Why the database is unusable (its own message), or None while it is sound.
        self.damaged: str | None = None

    def create_schema(self) -> None:
        """Create the tables; databases made by an earlier version get the newer columns."""
        with self._connect() as db:
            db.executescript(SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(results)")}
            for f in FIELDS:
                if f.name not in have:
                    db.execute(f"ALTER TABLE results ADD COLUMN {f.name} {f.sql}")
        for f in self._db_path.parent.glob(self._db_path.name + "*"):  # and its WAL files
            os.chmod(f, 0o600)

    @property
    def exists(self) -> bool:
        """True when the store was initialised before (its database exists)."""
        return self._db_path.exists()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction, closed afterwards. The errors of a damaged
        file become :class:`StoreDamaged` and stop every later use of the database."""
        if self.damaged:
            raise StoreDamaged(self.damaged)
        db = None
        try:
            db = sqlite3.connect(self._db_path, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            if _is_full(exc):
                raise StoreFull(str(exc)) from None
            if not _is_damage(exc):
                raise
            self._mark_damaged(str(exc))
            raise StoreDamaged(self.damaged) from None
        finally:
            if db is not None:
                db.close()

    def _mark_damaged(self, reason: str) -> None:
        reason = "; ".join(line.strip(" *") for line in reason.splitlines() if line.strip(" *"))
        if not self.damaged:
            log.error("the results database %s is damaged: %s", DATABASE_NAME, reason)
        self.damaged = reason

    def check(self) -> str | None:
        """Check the database's integrity (``PRAGMA quick_check``); the problem, or None."""
        try:
            with self._connect() as db:
                rows = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        except StoreDamaged:
            return self.damaged
        if rows != ["ok"]:
            self._mark_damaged("; ".join(rows[:3]))
        return self.damaged
