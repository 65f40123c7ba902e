"""Accounts and API tokens in the app's SQLite database.

Passwords are hashed with scrypt through werkzeug's maintained helpers;
API tokens are random and stored only as SHA-256 hashes.
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time

from werkzeug.security import check_password_hash, generate_password_hash

SCHEMA = """
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
"""
MIN_PASSWORD = 10


def init(db: sqlite3.Connection) -> None:
    """Create the users and tokens tables."""
    db.executescript(SCHEMA)


def _valid_username(name: str) -> bool:
    return 1 <= len(name) <= 64 and all(c.isalnum() or c in "._-@" for c in name)


def create_user(db: sqlite3.Connection, username: str, password: str) -> int:
    """Add a user; raises ValueError for a bad name, short password or duplicate."""
    if not _valid_username(username):
        raise ValueError("user names use letters, digits and . _ - @ (at most 64)")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"passwords need at least {MIN_PASSWORD} characters")
    try:
        cur = db.execute("INSERT INTO users (username, password_hash, created) VALUES (?,?,?)",
                         (username, generate_password_hash(password, method="scrypt"),
                          time.time()))
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"user {username!r} already exists") from exc
    return int(cur.lastrowid)


def authenticate(db: sqlite3.Connection, username: str, password: str) -> int | None:
    """The user id for a name and password, or None."""
    row = db.execute("SELECT id, password_hash FROM users WHERE username = ?",
                     (username,)).fetchone()
    if row is None:
        check_password_hash(generate_password_hash("x", method="scrypt"), password)  # even timing
        return None
    return int(row[0]) if check_password_hash(row[1], password) else None


def user_count(db: sqlite3.Connection) -> int:
    """How many logins exist."""
    return int(db.execute("SELECT COUNT(*) FROM users").fetchone()[0])


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: sqlite3.Connection, username: str) -> str:
    """A new API token for ``username``; only its hash is stored."""
    row = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise ValueError(f"no user {username!r}")
    token = "pn_" + secrets.token_urlsafe(32)
    db.execute("INSERT INTO tokens VALUES (?,?,?)", (_hash_token(token), row[0], time.time()))
    return token


def user_for_token(db: sqlite3.Connection, token: str) -> int | None:
    """The user id an API token belongs to, or None."""
    row = db.execute("SELECT user_id FROM tokens WHERE token_hash = ?",
                     (_hash_token(token),)).fetchone()
    return int(row[0]) if row else None
