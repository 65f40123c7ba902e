"""The store: every query the app makes, one method each, over a database
(:mod:`app.store.database`) and a file store (:mod:`app.store.files`). Nothing outside
this package opens a connection or writes SQL.

The methods take and return records (:mod:`app.store.records`) and bytes, never
connections or paths, so a PostgreSQL database or a shared file store replaces the
connection and SQL dialect and the file class, not the callers.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

from app.store import accounts
from app.store.database import DATABASE_NAME, Database
from app.store.files import LocalFiles, Staged
from app.store.records import FIELDS, ResultRow, SendState, valid_id


def _to_sql(row: ResultRow) -> tuple:
    values = []
    for f in FIELDS:
        v = getattr(row, f.name)
        values.append(json.dumps(v) if f.kind == "json" else int(v) if f.kind == "bool" else v)
    return tuple(values)


def _from_sql(r: sqlite3.Row) -> ResultRow:
    values = {}
    for f in FIELDS:
        v = r[f.name]
        values[f.name] = json.loads(v) if f.kind == "json" else bool(v) if f.kind == "bool" else v
    return ResultRow(**values)


def _send_state(r: sqlite3.Row) -> SendState:
    return SendState(r["result_id"], r["state"], r["attempts"], r["last_error"], r["updated"],
                     r["sent_at"], r["seg_sop_uid"])


class Store(Database):
    """Results, batches, accounts, login sessions, rate counters and PACS sends: rows in
    the database, files beside."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)
        self.files = LocalFiles(self.root)
        super().__init__(self.root / DATABASE_NAME)

    def init(self) -> None:
        """Create folders and the schema; clear stale half-written results of a crash.
        An existing database is checked first (``PRAGMA quick_check``): a damaged one is
        reported (:attr:`damaged`, ``/readyz``, the log) and left as it is."""
        self.files.init()
        if self.exists and self.check() is not None:
            return
        self.create_schema()

    # -- results: writing ------------------------------------------------------

    def stage(self, result_id: str) -> Staged:
        """Where a new result's files are written before :meth:`commit`."""
        return self.files.stage(result_id)

    def commit(self, row: ResultRow, staged: Staged) -> None:
        """Publish a complete staged result, then insert its row."""
        self.files.publish(staged)
        try:
            with self._connect() as db:
                db.execute(f"INSERT INTO results ({', '.join(f.name for f in FIELDS)}) "
                           f"VALUES ({', '.join('?' for _ in FIELDS)})", _to_sql(row))
        except Exception:
            self.files.delete(row.id)
            raise

    def discard(self, staged: Staged) -> None:
        """Drop the staged files of a failed upload."""
        self.files.discard(staged)

    # -- results: reading ------------------------------------------------------

    def _one(self, sql: str, args: tuple) -> sqlite3.Row | None:
        """The first row of a query, or ``None``."""
        with self._connect() as db:
            return db.execute(sql, args).fetchone()

    def get(self, result_id: str, owner: str) -> ResultRow | None:
        """The result if it exists and belongs to ``owner``; else ``None``."""
        r = valid_id(result_id) and self._one("SELECT * FROM results WHERE id = ? AND owner = ?",
                                              (result_id, owner))
        return _from_sql(r) if r else None

    def get_any(self, result_id: str) -> ResultRow | None:
        """A result whoever owns it (the operator's commands), else ``None``."""
        r = valid_id(result_id) and self._one("SELECT * FROM results WHERE id = ?", (result_id,))
        return _from_sql(r) if r else None

    def list(self, owner: str, sort: str = "newest", limit: int = 200,
             batch: str | None = None) -> list[ResultRow]:
        """An owner's results (of one batch, if given): newest first, by probability
        (triage), or in upload order (``sort="upload"``)."""
        order = {"probability": "probability DESC, created DESC",
                 "upload": "created ASC"}.get(sort, "created DESC")
        where, args = "owner = ?", [owner]
        if batch is not None:
            where, args = where + " AND batch = ?", args + [batch]
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM results WHERE {where} ORDER BY {order} LIMIT ?",
                              (*args, limit)).fetchall()
        return [_from_sql(r) for r in rows]

    def all_ids(self) -> list[str]:
        """Every stored result id."""
        with self._connect() as db:
            return [r["id"] for r in db.execute("SELECT id FROM results")]

    def read_file(self, result_id: str, name: str) -> bytes | None:
        """One file of a result, or ``None``."""
        return self.files.read(result_id, name)

    def has_file(self, result_id: str, name: str) -> bool:
        """True when the result has the file."""
        return self.files.exists(result_id, name)

    def add_file(self, result_id: str, name: str, data: bytes) -> bool:
        """Keep a file rendered from a result's own files; ``False`` if the result is gone."""
        return self.files.add(result_id, name, data)

    # -- results: removing -----------------------------------------------------

    def delete(self, result_id: str, owner: str) -> bool:
        """Delete an owner's result, files first and then the row: on a full disk the files
        free the space the database needs to record the deletion."""
        if self.get(result_id, owner) is None:
            return False
        self.files.delete(result_id)
        with self._connect() as db:
            db.execute("DELETE FROM results WHERE id = ? AND owner = ?", (result_id, owner))
            db.execute("DELETE FROM pacs_sends WHERE result_id = ?", (result_id,))
        return True

    def free_bytes(self) -> int:
        """Free space on the disk under the store."""
        return shutil.disk_usage(self.root).free

    def purge(self, older_than_days: float, now: float | None = None) -> int:
        """Delete results (rows and files together) older than the retention period."""
        cutoff = (now or time.time()) - older_than_days * 86400
        with self._connect() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM results WHERE created < ?",
                                               (cutoff,))]
            for result_id in ids:
                self.files.delete(result_id)
                db.execute("DELETE FROM results WHERE id = ?", (result_id,))
            db.execute("DELETE FROM batches WHERE created < ?", (cutoff,))
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
        self.files.remove_orphans(set(self.all_ids()))
        return len(ids)

    # -- batches ---------------------------------------------------------------

    def add_batch(self, batch_id: str, owner: str, files: int, errors: list[dict]) -> None:
        """Record an upload batch: how many files were sent and the refused ones' messages."""
        with self._connect() as db:
            db.execute("INSERT INTO batches (id, owner, created, files, errors) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (batch_id, owner, time.time(), files, json.dumps(errors)))

    def get_batch(self, batch_id: str, owner: str) -> dict | None:
        """A batch of ``owner`` (``id``, ``created``, ``files``, ``errors``), else ``None``."""
        r = valid_id(batch_id) and self._one("SELECT * FROM batches WHERE id = ? AND owner = ?",
                                             (batch_id, owner))
        if not r:
            return None
        return {"id": r["id"], "created": r["created"], "files": r["files"],
                "errors": json.loads(r["errors"])}

    # -- accounts and API tokens -------------------------------------------------

    def user_count(self) -> int:
        """How many logins exist."""
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def create_user(self, username: str, password: str) -> int:
        """Add a user; raises ValueError for a bad name, short password or duplicate."""
        accounts.check_new_account(username, password)
        try:
            with self._connect() as db:
                cur = db.execute("INSERT INTO users (username, password_hash, created) "
                                 "VALUES (?,?,?)",
                                 (username, accounts.hash_password(password), time.time()))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"user {username!r} already exists") from exc
        return int(cur.lastrowid)

    def user_id(self, username: str) -> int | None:
        """The id of a user name, or ``None``."""
        row = self._one("SELECT id FROM users WHERE username = ?", (username,))
        return int(row[0]) if row else None

    def authenticate(self, username: str, password: str) -> int | None:
        """The user id for a name and password, or ``None``."""
        with self._connect() as db:
            row = db.execute("SELECT id, password_hash FROM users WHERE username = ?",
                             (username,)).fetchone()
        ok = accounts.password_matches(row[1] if row else None, password)
        return int(row[0]) if ok else None

    def create_token(self, username: str) -> str:
        """A new API token for ``username`` (only its hash is stored)."""
        user_id = self.user_id(username)
        if user_id is None:
            raise ValueError(f"no user {username!r}")
        token = accounts.new_token()
        with self._connect() as db:
            db.execute("INSERT INTO tokens VALUES (?,?,?)",
                       (accounts.hash_token(token), user_id, time.time()))
        return token

    def user_for_token(self, token: str) -> int | None:
        """The user id an API token belongs to, or ``None``."""
        row = self._one("SELECT user_id FROM tokens WHERE token_hash = ?",
                        (accounts.hash_token(token),))
        return int(row[0]) if row else None

    # -- login sessions ----------------------------------------------------------

    def open_session(self, subject: str) -> str:
        """A new login session of ``subject``; returns its id (kept in the signed cookie;
        only its hash is stored)."""
        session_id = accounts.new_token()
        with self._connect() as db:
            db.execute("INSERT INTO sessions VALUES (?,?,?)",
                       (accounts.hash_token(session_id), subject, time.time()))
        return session_id

    def session_active(self, session_id: str, subject: str, max_age_s: float) -> bool:
        """True while the login session exists (not logged out), belongs to ``subject``
        and is younger than ``max_age_s``."""
        if not session_id:
            return False
        with self._connect() as db:
            row = db.execute("SELECT subject, created FROM sessions WHERE id_hash = ?",
                             (accounts.hash_token(session_id),)).fetchone()
        return row is not None and row[0] == subject and row[1] > time.time() - max_age_s

    def close_session(self, session_id: str) -> None:
        """End a login session (logout): its cookie no longer logs in, even if kept."""
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?",
                       (accounts.hash_token(session_id or ""),))

    def close_expired_sessions(self, max_age_s: float) -> int:
        """Forget login sessions older than ``max_age_s``; returns how many."""
        with self._connect() as db:
            return db.execute("DELETE FROM sessions WHERE created < ?",
                              (time.time() - max_age_s,)).rowcount

    # -- rate-limit counters (shared by every worker and machine) -------------------

    def count_hit(self, key: str, window_s: float, amount: int = 1) -> int:
        """Add ``amount`` to the counter ``key`` of a fixed window of ``window_s`` seconds
        (a new window when the last one ended); returns the count in this window."""
        now = time.time()
        with self._connect() as db:
            row = db.execute(
                "INSERT INTO rate_counters (key, count, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET "
                "count = CASE WHEN rate_counters.expires <= ? THEN excluded.count "
                "ELSE rate_counters.count + excluded.count END, "
                "expires = CASE WHEN rate_counters.expires <= ? THEN excluded.expires "
                "ELSE rate_counters.expires END RETURNING count",
                (key, amount, now + window_s, now, now)).fetchone()
        return int(row[0])

    def counter(self, key: str) -> tuple[int, float]:
        """``(count, end of window)`` of a counter; ``(0, now)`` when none is running."""
        now = time.time()
        with self._connect() as db:
            row = db.execute("SELECT count, expires FROM rate_counters WHERE key = ? AND "
                             "expires > ?", (key, now)).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, now)

    def clear_counters(self, key: str | None = None) -> None:
        """Forget one counter, or every one (``None``) and the ended ones in any case."""
        with self._connect() as db:
            if key is None:
                db.execute("DELETE FROM rate_counters")
            else:
                db.execute("DELETE FROM rate_counters WHERE key = ? OR expires <= ?",
                           (key, time.time()))

    # -- PACS sends --------------------------------------------------------------

    def send_state(self, result_id: str) -> SendState | None:
        """The send state of a result's SEG, or ``None`` if it was never queued."""
        r = self._one("SELECT * FROM pacs_sends WHERE result_id = ?", (result_id,))
        return _send_state(r) if r else None

    def queue_send(self, result_id: str, owner: str) -> None:
        """Record that a result's SEG must be sent (unless a sender holds it now)."""
        with self._connect() as db:
            db.execute("INSERT INTO pacs_sends (result_id, owner, state, updated) "
                       "VALUES (?,?,'queued',?) ON CONFLICT(result_id) DO UPDATE SET "
                       "state = 'queued', updated = excluded.updated "
                       "WHERE pacs_sends.state != 'sending'", (result_id, owner, time.time()))

    def claim_send(self, result_id: str, owner: str, stale_after_s: float) -> bool:
        """Mark the send as in progress; ``False`` if another thread or worker holds it
        (a claim older than ``stale_after_s`` died with its process and is taken over)."""
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO pacs_sends (result_id, owner, state, updated) "
                "VALUES (?,?,'sending',?) ON CONFLICT(result_id) DO UPDATE SET "
                "state = 'sending', updated = excluded.updated "
                "WHERE pacs_sends.state != 'sending' OR pacs_sends.updated < ?",
                (result_id, owner, now, now - stale_after_s))
            return cur.rowcount == 1

    def finish_send(self, result_id: str, error: str | None, seg_uid: str | None) -> None:
        """Record a send's outcome: sent (with the SEG's SOP Instance UID) or failed."""
        now = time.time()
        with self._connect() as db:
            if error is None:
                db.execute("UPDATE pacs_sends SET state = 'sent', attempts = attempts + 1, "
                           "last_error = NULL, updated = ?, sent_at = ?, seg_sop_uid = ? "
                           "WHERE result_id = ?", (now, now, seg_uid, result_id))
            else:
                db.execute("UPDATE pacs_sends SET state = 'failed', attempts = attempts + 1, "
                           "last_error = ?, updated = ? WHERE result_id = ?",
                           (error, now, result_id))

    def unfinished_sends(self, stale_after_s: float, limit: int = 500) -> list[tuple[str, str]]:
        """``(result_id, owner)`` of sends not yet done (queued, failed, or claimed longer
        than ``stale_after_s`` ago), oldest first."""
        with self._connect() as db:
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
            rows = db.execute(
                "SELECT result_id, owner FROM pacs_sends WHERE state IN ('queued', 'failed') "
                "OR (state = 'sending' AND updated < ?) ORDER BY updated LIMIT ?",
                (time.time() - stale_after_s, limit)).fetchall()
        return [(r[0], r[1]) for r in rows]
