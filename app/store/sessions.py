"""Login sessions: one row per login, so a logout ends it on every worker (the signed
cookie holds the session id; only its hash is stored)."""

from __future__ import annotations

import time

from app.store import credentials
from app.store.database import Repository


class Sessions(Repository):
    """Opening, checking and closing login sessions."""

    def open(self, subject: str) -> str:
        """A new login session of ``subject``; returns its id (kept in the signed cookie;
        only its hash is stored)."""
        session_id = credentials.new_token()
        with self._connect() as db:
            db.execute(
                "INSERT INTO sessions (id_hash, subject, created) VALUES (:h, :s, :t)",
                {"h": credentials.hash_token(session_id), "s": subject, "t": time.time()},
            )
        return session_id

    def active(self, session_id: str, subject: str, max_age_s: float) -> bool:
        """True while the login session exists (not logged out), belongs to ``subject``
        and is younger than ``max_age_s``."""
        if not session_id:
            return False
        row = self._one(
            "SELECT subject, created FROM sessions WHERE id_hash = :h",
            {"h": credentials.hash_token(session_id)},
        )
        return (
            row is not None
            and row["subject"] == subject
            and row["created"] > time.time() - max_age_s
        )

    def close(self, session_id: str) -> None:
        """End a login session (logout): its cookie no longer logs in, even if kept."""
        with self._connect() as db:
            db.execute(
                "DELETE FROM sessions WHERE id_hash = :h",
                {"h": credentials.hash_token(session_id or "")},
            )

    def close_expired(self, max_age_s: float) -> int:
        """Forget login sessions older than ``max_age_s``; returns how many."""
        with self._connect() as db:
            return db.execute(
                "DELETE FROM sessions WHERE created < :t", {"t": time.time() - max_age_s}
            ).rowcount
