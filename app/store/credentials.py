"""Passwords and API tokens: hashing and checks, no storage.

Passwords are hashed with scrypt through werkzeug's maintained helpers; API
tokens and login session ids are random and stored only as SHA-256 hashes (their
tables are kept by :mod:`app.store.accounts` and :mod:`app.store.sessions`).
"""

from __future__ import annotations

import hashlib
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

MIN_PASSWORD = 10
TOKEN_PREFIX = "pn_"


def check_new_account(username: str, password: str) -> None:
    """Raises ValueError for a user name or password that may not be used."""
    if not (1 <= len(username) <= 64 and all(c.isalnum() or c in "._-@" for c in username)):
        raise ValueError("user names use letters, digits and . _ - @ (at most 64)")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"passwords need at least {MIN_PASSWORD} characters")


def hash_password(password: str) -> str:
    """The stored form of a password (scrypt, salted)."""
    return generate_password_hash(password, method="scrypt")


def password_matches(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; an unknown user (``None``) costs the same time."""
    if stored_hash is None:
        check_password_hash(hash_password("x"), password)  # even timing
        return False
    return check_password_hash(stored_hash, password)


def new_token() -> str:
    """A new API token (shown once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()
