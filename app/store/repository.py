"""The store: every query the app makes, one method each, over a database
(:mod:`app.store.database`) and a file store (:mod:`app.store.files`). Nothing outside
this package opens a connection or writes SQL.

The methods take and return records (:mod:`app.store.records`) and bytes, never
connections or paths. The SQL is written once for SQLite and PostgreSQL alike (``ON
CONFLICT``, ``RETURNING``); where they differ (PostgreSQL's ``FOR UPDATE SKIP LOCKED``
for the PACS queue) the method says so.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from sqlalchemy import exc as sa_exc

from app.store import accounts
from app.store.database import DATABASE_NAME, Database, StoreFull, sqlite_url
from app.store.files import Staged, open_files
from app.store.records import (FIELDS, ROLES, AuditEvent, ReadRow, ResultRow, Review, Scope,
                               SendState, User, valid_id)

#: Longest wait between two tries of a failing PACS send.
MAX_BACKOFF_S = 3600.0


def _to_sql(row: ResultRow) -> dict:
    values = {}
    for f in FIELDS:
        v = getattr(row, f.name)
        values[f.name] = json.dumps(v) if f.kind == "json" else int(v) if f.kind == "bool" else v
    return values


def _from_sql(r: Mapping) -> ResultRow:
    values = {}
    for f in FIELDS:
        v = r[f.name]
        values[f.name] = json.loads(v) if f.kind == "json" else bool(v) if f.kind == "bool" else v
    return ResultRow(**values)


def _visible(scope: "str | Scope | None") -> tuple[str, dict]:
    """The condition (and its parameters) of the results ``scope`` may read (``None``:
    every result, for the operator's commands)."""
    if scope is None:
        return "1 = 1", {}
    scope = Scope.of(scope)
    if scope.team_id is None:
        return "owner = :owner", {"owner": scope.owner}
    return "(owner = :owner OR team_id = :team)", {"owner": scope.owner, "team": scope.team_id}


def _user(r: Mapping) -> User:
    return User(int(r["id"]), r["username"], r["team_id"], r["team"] or "", r["role"])


_USER_SQL = ("SELECT users.id, users.username, users.team_id, users.role, teams.name AS team "
             "FROM users LEFT JOIN teams ON teams.id = users.team_id")


def _send_state(r: Mapping) -> SendState:
    return SendState(r["result_id"], r["state"], r["attempts"], r["last_error"], r["updated"],
                     r["sent_at"], r["seg_sop_uid"], r["next_attempt"])


class Store(Database):
    """Results, batches, accounts, login sessions, rate counters and PACS sends: rows in
    the database, files beside."""

    def __init__(self, data_dir: str | Path, database_url: str | None = None,
                 blob_url: str | None = None, reserve_mb: float = 0.0):
        self.root = Path(data_dir)
        self.files = open_files(blob_url or str(self.root))
        #: Free space on the files' disk that new results and cached renditions leave alone,
        #: so the database (its WAL and shared-memory files) can always grow: reading,
        #: logging in, reviewing and deleting keep working when uploads have filled the disk.
        self.reserve_bytes = int(reserve_mb * 2**20)
        super().__init__(database_url or sqlite_url(self.root / DATABASE_NAME))

    @classmethod
    def from_settings(cls, settings) -> "Store":
        """The store the settings name (data folder, database URL, blob URL, free-space
        reserve)."""
        return cls(settings.data_dir, settings.database_url, settings.blob_url,
                   settings.min_free_mb)

    def _check_reserve(self, what: str) -> None:
        """Raise :class:`StoreFull` when writing ``what`` would eat into the reserve."""
        free = self.files.free_bytes()
        if free is not None and free < self.reserve_bytes:
            raise StoreFull(f"{free / 2**20:.0f} MB free, under the {self.reserve_bytes / 2**20:.0f}"
                            f" MB kept for the database; {what} not written")

    def init(self) -> None:
        """Create folders and the schema; clear stale half-written results and result
        folders without a row of a crash.
        An existing database is checked first (``PRAGMA quick_check``): a damaged one is
        reported (:attr:`damaged`, ``/readyz``, the log) and left as it is."""
        if self.is_sqlite:  # the database file's folder (the data folder)
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            self._db_path.parent.chmod(0o700)
        self.files.init()
        if self.exists and self.check() is not None:
            return
        self.create_schema()
        # result folders whose row was never written (a worker killed between publishing a
        # result's files and inserting its row); recent ones may be another worker's commit
        self.files.remove_orphans(set(self.all_ids()))

    # -- results: writing ------------------------------------------------------

    def stage(self, result_id: str) -> Staged:
        """Where a new result's files are written before :meth:`commit` (:class:`StoreFull`
        when the disk is down to its reserve)."""
        self._check_reserve("a new result")
        return self.files.stage(result_id)

    def commit(self, row: ResultRow, staged: Staged) -> None:
        """Publish a complete staged result, then insert its row."""
        self.files.publish(staged)
        values = _to_sql(row)
        try:
            with self._connect() as db:
                if values["team_id"] is None and row.owner.startswith("user:"):
                    values["team_id"] = db.scalar(
                        "SELECT team_id FROM users WHERE 'user:' || CAST(id AS TEXT) = :o",
                        {"o": row.owner})
                db.execute(f"INSERT INTO results ({', '.join(f.name for f in FIELDS)}) "
                           f"VALUES ({', '.join(':' + f.name for f in FIELDS)})", values)
        except Exception:
            self.files.delete(row.id)
            raise

    def discard(self, staged: Staged) -> None:
        """Drop the staged files of a failed upload."""
        self.files.discard(staged)

    # -- results: reading ------------------------------------------------------

    def _one(self, sql: str, args: Mapping) -> Mapping | None:
        """The first row of a query, or ``None``."""
        with self._connect(write=False) as db:
            return db.one(sql, args)

    def get(self, result_id: str, owner: "str | Scope | None") -> ResultRow | None:
        """The result if it exists and ``owner`` may read it (its own, or its team's for a
        team :class:`Scope`; ``None``: whoever owns it); else ``None``."""
        if not valid_id(result_id):
            return None
        where, args = _visible(owner)
        r = self._one(f"SELECT * FROM results WHERE id = :id AND {where}",
                      {"id": result_id, **args})
        return _from_sql(r) if r else None

    def get_any(self, result_id: str) -> ResultRow | None:
        """A result whoever owns it (the operator's commands), else ``None``."""
        return self.get(result_id, None)

    def list(self, owner: "str | Scope", sort: str = "newest", limit: int = 200,
             batch: str | None = None) -> list[ResultRow]:
        """The results ``owner`` may read (of one batch, if given): newest first, by
        probability (triage), or in upload order (``sort="upload"``)."""
        order = {"probability": "probability DESC, created DESC",
                 "upload": "created ASC"}.get(sort, "created DESC")
        where, args = _visible(owner)
        args["limit"] = limit
        if batch is not None:
            where, args["batch"] = where + " AND batch = :batch", batch
        with self._connect(write=False) as db:
            rows = db.all(f"SELECT * FROM results WHERE {where} ORDER BY {order} LIMIT :limit",
                          args)
        return [_from_sql(r) for r in rows]

    def all_ids(self) -> list[str]:
        """Every stored result id."""
        with self._connect(write=False) as db:
            return [r["id"] for r in db.all("SELECT id FROM results")]

    def between(self, since: float, until: float) -> list[ResultRow]:
        """Every result uploaded in ``[since, until)``, whoever owns it, oldest first
        (the operator's re-reads)."""
        with self._connect(write=False) as db:
            rows = db.all("SELECT * FROM results WHERE created >= :since AND created < :until "
                          "ORDER BY created", {"since": since, "until": until})
        return [_from_sql(r) for r in rows]

    def read_file(self, result_id: str, name: str) -> bytes | None:
        """One file of a result, or ``None``."""
        return self.files.read(result_id, name)

    def has_file(self, result_id: str, name: str) -> bool:
        """True when the result has the file."""
        return self.files.exists(result_id, name)

    def add_file(self, result_id: str, name: str, data: bytes) -> bool:
        """Keep a file rendered from a result's own files; ``False`` if the result is gone,
        :class:`StoreFull` when the disk is down to its reserve (serve it uncached)."""
        self._check_reserve("a rendition")
        return self.files.add(result_id, name, data)

    # -- results: removing -----------------------------------------------------

    def delete(self, result_id: str, owner: "str | Scope") -> bool:
        """Delete a result ``owner`` may read, files first and then the row: on a full disk
        the files free the space the database needs to record the deletion."""
        if self.get(result_id, owner) is None:
            return False
        self.files.delete(result_id)
        with self._connect() as db:
            self._forget(db, [result_id])
        return True

    @staticmethod
    def _forget(db, ids: list[str]) -> None:
        for result_id in ids:
            for table, column in (("reads", "result_id"), ("pacs_sends", "result_id"),
                                  ("reviews", "result_id"), ("results", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = :id", {"id": result_id})

    def health(self) -> str | None:
        """``None`` when the database answers and the files can be listed now, else
        what is wrong (``/readyz``)."""
        return self.damaged or self.ping() or self.files.check()

    def free_bytes(self) -> int | None:
        """Free space on the disk under the store's files (``None``: not a local disk)."""
        return self.files.free_bytes()

    def purge(self, older_than_days: float, now: float | None = None) -> int:
        """Delete results (rows and files together) older than the retention period, and
        files without a row (a node that died between writing files and their row)."""
        cutoff = (now or time.time()) - older_than_days * 86400
        with self._connect() as db:
            ids = [r["id"] for r in db.all("SELECT id FROM results WHERE created < :cutoff",
                                           {"cutoff": cutoff})]
            for result_id in ids:
                self.files.delete(result_id)
                db.execute("INSERT INTO audit_events (at, actor, action, result_id, team_id) "
                           "SELECT :at, 'retention', 'purge', id, team_id FROM results "
                           "WHERE id = :id", {"at": time.time(), "id": result_id})
            self._forget(db, ids)
            db.execute("DELETE FROM batches WHERE created < :cutoff", {"cutoff": cutoff})
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
        self.files.remove_orphans(set(self.all_ids()))
        return len(ids)

    # -- re-reads by other models ----------------------------------------------------

    def add_read(self, read: ReadRow) -> None:
        """Keep one model's read of a stored study (a later read by the same model
        replaces it)."""
        values = {"result_id": read.result_id, "model": read.model, "created": read.created,
                  "probability": read.probability,
                  "positive": None if read.positive is None else int(read.positive),
                  "threshold": read.threshold, "area_px": read.area_px, "rle": read.rle,
                  "error": read.error}
        with self._connect() as db:
            db.execute("INSERT INTO reads (result_id, model, created, probability, positive, "
                       "threshold, area_px, rle, error) VALUES (:result_id, :model, :created, "
                       ":probability, :positive, :threshold, :area_px, :rle, :error) "
                       "ON CONFLICT (result_id, model) DO UPDATE SET created = "
                       "excluded.created, probability = excluded.probability, positive = "
                       "excluded.positive, threshold = excluded.threshold, area_px = "
                       "excluded.area_px, rle = excluded.rle, error = excluded.error", values)

    def reads(self, result_id: str) -> list[ReadRow]:
        """Every re-read of a result, oldest first."""
        with self._connect(write=False) as db:
            rows = db.all("SELECT * FROM reads WHERE result_id = :id ORDER BY created",
                          {"id": result_id})
        return [ReadRow(r["result_id"], r["model"], r["created"], r["probability"],
                        None if r["positive"] is None else bool(r["positive"]), r["threshold"],
                        r["area_px"], r["rle"], r["error"]) for r in rows]

    # -- batches ---------------------------------------------------------------

    def add_batch(self, batch_id: str, owner: str, files: int, errors: list[dict]) -> None:
        """Record an upload batch: how many files were sent and the refused ones' messages."""
        with self._connect() as db:
            db.execute("INSERT INTO batches (id, owner, created, files, errors) "
                       "VALUES (:id, :owner, :created, :files, :errors)",
                       {"id": batch_id, "owner": owner, "created": time.time(), "files": files,
                        "errors": json.dumps(errors)})

    def set_batch_errors(self, batch_id: str, errors: list[dict]) -> None:
        """Record the refused files' messages of a batch once all its files were tried."""
        with self._connect() as db:
            db.execute("UPDATE batches SET errors = :errors WHERE id = :id",
                       {"id": batch_id, "errors": json.dumps(errors)})

    def get_batch(self, batch_id: str, owner: "str | Scope") -> dict | None:
        """A batch ``owner`` uploaded (``id``, ``created``, ``files``, ``errors``), else
        ``None``."""
        r = valid_id(batch_id) and self._one(
            "SELECT * FROM batches WHERE id = :id AND owner = :owner",
            {"id": batch_id, "owner": Scope.of(owner).owner})
        if not r:
            return None
        return {"id": r["id"], "created": r["created"], "files": r["files"],
                "errors": json.loads(r["errors"])}

    # -- accounts and API tokens -------------------------------------------------

    def user_count(self) -> int:
        """How many logins exist."""
        with self._connect(write=False) as db:
            return int(db.scalar("SELECT COUNT(*) FROM users"))

    def create_user(self, username: str, password: str, team: str | None = None,
                    role: str | None = None) -> int:
        """Add a user to ``team`` (made if new; default ``default``) with ``role``
        (default: ``admin`` for the first user, else ``radiologist``); raises ValueError
        for a bad name, short password, unknown role or duplicate."""
        accounts.check_new_account(username, password)
        team = (team or "default").strip()
        if not team or len(team) > 64:
            raise ValueError("a team name has 1 to 64 characters")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        try:
            with self._connect() as db:
                team_id = self._team_id(db, team)
                if role is None:
                    role = "radiologist" if db.scalar("SELECT COUNT(*) FROM users") else "admin"
                return int(db.scalar(
                    "INSERT INTO users (username, password_hash, created, team_id, role) "
                    "VALUES (:u, :h, :t, :team, :role) RETURNING id",
                    {"u": username, "h": accounts.hash_password(password), "t": time.time(),
                     "team": team_id, "role": role}))
        except sa_exc.IntegrityError as exc:
            raise ValueError(f"user {username!r} already exists") from exc

    @staticmethod
    def _team_id(db, name: str) -> int:
        """The id of the team ``name``, made if new."""
        db.execute("INSERT INTO teams (name, created) VALUES (:n, :t) ON CONFLICT (name) "
                   "DO NOTHING", {"n": name, "t": time.time()})
        return int(db.scalar("SELECT id FROM teams WHERE name = :n", {"n": name}))

    def user(self, user_id: int) -> User | None:
        """A user with its team and role, or ``None``."""
        r = self._one(f"{_USER_SQL} WHERE users.id = :id", {"id": int(user_id)})
        return _user(r) if r else None

    def users(self, team_id: int | None = None) -> list[User]:
        """Every user (of one team, if given), by name."""
        where, args = ("WHERE users.team_id = :t", {"t": team_id}) if team_id is not None \
            else ("", {})
        with self._connect(write=False) as db:
            return [_user(r) for r in db.all(f"{_USER_SQL} {where} ORDER BY users.username",
                                             args)]

    def set_role(self, user_id: int, role: str) -> None:
        """Change a user's role."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        with self._connect() as db:
            db.execute("UPDATE users SET role = :r WHERE id = :id", {"r": role, "id": user_id})

    def tokens(self, user_id: int) -> list[dict]:
        """A user's API tokens: ``id`` (the stored hash: not the token), ``created``."""
        with self._connect(write=False) as db:
            return [{"id": r["token_hash"], "created": r["created"]} for r in db.all(
                "SELECT token_hash, created FROM tokens WHERE user_id = :u ORDER BY created",
                {"u": user_id})]

    def revoke_token(self, token_id: str, team_id: int | None = None) -> bool:
        """Delete an API token by its id (of a user of ``team_id``, if given); ``False``
        when there is no such token."""
        where = " AND user_id IN (SELECT id FROM users WHERE team_id = :team)" \
            if team_id is not None else ""
        with self._connect() as db:
            return db.execute(f"DELETE FROM tokens WHERE token_hash = :h{where}",
                              {"h": token_id, "team": team_id}).rowcount == 1

    def user_id(self, username: str) -> int | None:
        """The id of a user name, or ``None``."""
        row = self._one("SELECT id FROM users WHERE username = :u", {"u": username})
        return int(row["id"]) if row else None

    def authenticate(self, username: str, password: str) -> int | None:
        """The user id for a name and password, or ``None``."""
        row = self._one("SELECT id, password_hash FROM users WHERE username = :u",
                        {"u": username})
        ok = accounts.password_matches(row["password_hash"] if row else None, password)
        return int(row["id"]) if ok else None

    def create_token(self, username: str) -> str:
        """A new API token for ``username`` (only its hash is stored)."""
        user_id = self.user_id(username)
        if user_id is None:
            raise ValueError(f"no user {username!r}")
        token = accounts.new_token()
        with self._connect() as db:
            db.execute("INSERT INTO tokens (token_hash, user_id, created) VALUES (:h, :u, :t)",
                       {"h": accounts.hash_token(token), "u": user_id, "t": time.time()})
        return token

    def user_for_token(self, token: str) -> int | None:
        """The user id an API token belongs to, or ``None``."""
        row = self._one("SELECT user_id FROM tokens WHERE token_hash = :h",
                        {"h": accounts.hash_token(token)})
        return int(row["user_id"]) if row else None

    # -- login sessions ----------------------------------------------------------

    def open_session(self, subject: str) -> str:
        """A new login session of ``subject``; returns its id (kept in the signed cookie;
        only its hash is stored)."""
        session_id = accounts.new_token()
        with self._connect() as db:
            db.execute("INSERT INTO sessions (id_hash, subject, created) VALUES (:h, :s, :t)",
                       {"h": accounts.hash_token(session_id), "s": subject, "t": time.time()})
        return session_id

    def session_active(self, session_id: str, subject: str, max_age_s: float) -> bool:
        """True while the login session exists (not logged out), belongs to ``subject``
        and is younger than ``max_age_s``."""
        if not session_id:
            return False
        row = self._one("SELECT subject, created FROM sessions WHERE id_hash = :h",
                        {"h": accounts.hash_token(session_id)})
        return row is not None and row["subject"] == subject \
            and row["created"] > time.time() - max_age_s

    def close_session(self, session_id: str) -> None:
        """End a login session (logout): its cookie no longer logs in, even if kept."""
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = :h",
                       {"h": accounts.hash_token(session_id or "")})

    def close_expired_sessions(self, max_age_s: float) -> int:
        """Forget login sessions older than ``max_age_s``; returns how many."""
        with self._connect() as db:
            return db.execute("DELETE FROM sessions WHERE created < :t",
                              {"t": time.time() - max_age_s}).rowcount

    # -- rate-limit counters (shared by every worker and machine) -------------------

    def count_hit(self, key: str, window_s: float, amount: int = 1) -> int:
        """Add ``amount`` to the counter ``key`` of a fixed window of ``window_s`` seconds
        (a new window when the last one ended); returns the count in this window."""
        now = time.time()
        with self._connect() as db:
            return int(db.scalar(
                "INSERT INTO rate_counters (key, count, expires) VALUES (:k, :n, :end) "
                "ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN rate_counters.expires <= :now THEN excluded.count "
                "ELSE rate_counters.count + excluded.count END, "
                "expires = CASE WHEN rate_counters.expires <= :now THEN excluded.expires "
                "ELSE rate_counters.expires END RETURNING count",
                {"k": key, "n": amount, "end": now + window_s, "now": now}))

    def counter(self, key: str) -> tuple[int, float]:
        """``(count, end of window)`` of a counter; ``(0, now)`` when none is running."""
        now = time.time()
        row = self._one("SELECT count, expires FROM rate_counters WHERE key = :k AND "
                        "expires > :now", {"k": key, "now": now})
        return (int(row["count"]), float(row["expires"])) if row else (0, now)

    def clear_counters(self, key: str | None = None) -> None:
        """Forget one counter, or every one (``None``) and the ended ones in any case."""
        with self._connect() as db:
            if key is None:
                db.execute("DELETE FROM rate_counters")
            else:
                db.execute("DELETE FROM rate_counters WHERE key = :k OR expires <= :now",
                           {"k": key, "now": time.time()})

    # -- PACS sends: a queue in the database, drained by PACS workers ----------------

    def send_state(self, result_id: str) -> SendState | None:
        """The send state of a result's SEG, or ``None`` if it was never queued."""
        r = self._one("SELECT * FROM pacs_sends WHERE result_id = :id", {"id": result_id})
        return _send_state(r) if r else None

    def queue_send(self, result_id: str, owner: str) -> None:
        """Record that a result's SEG must be sent now (unless a sender holds it)."""
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO pacs_sends (result_id, owner, state, updated, next_attempt) "
                       "VALUES (:id, :owner, 'queued', :now, :now) ON CONFLICT (result_id) "
                       "DO UPDATE SET state = 'queued', updated = excluded.updated, "
                       "next_attempt = excluded.next_attempt "
                       "WHERE pacs_sends.state != 'sending'",
                       {"id": result_id, "owner": owner, "now": now})

    def claim_send(self, result_id: str, owner: str, stale_after_s: float) -> bool:
        """Mark one send as in progress; ``False`` if another thread or worker holds it
        (a claim older than ``stale_after_s`` died with its process and is taken over)."""
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO pacs_sends (result_id, owner, state, updated) "
                "VALUES (:id, :owner, 'sending', :now) ON CONFLICT (result_id) DO UPDATE SET "
                "state = 'sending', updated = excluded.updated "
                "WHERE pacs_sends.state != 'sending' OR pacs_sends.updated < :stale",
                {"id": result_id, "owner": owner, "now": now, "stale": now - stale_after_s})
            return cur.rowcount == 1

    def claim_due_sends(self, limit: int, stale_after_s: float) -> list[tuple[str, str]]:
        """Claim up to ``limit`` sends that are due (queued, failed and past their
        back-off, or claimed by a sender that died), oldest first, and return their
        ``(result_id, owner)``. Several PACS workers may call this at once: on PostgreSQL
        the rows are locked with ``FOR UPDATE SKIP LOCKED``, so no two claim the same send;
        on SQLite the transaction holds the file's write lock."""
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        with self._connect() as db:
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
            rows = db.all(
                "UPDATE pacs_sends SET state = 'sending', updated = :now WHERE result_id IN ("
                "SELECT result_id FROM pacs_sends WHERE (state IN ('queued', 'failed') AND "
                "COALESCE(next_attempt, 0) <= :now) OR (state = 'sending' AND updated < :stale) "
                f"ORDER BY updated LIMIT :limit{lock}) RETURNING result_id, owner",
                {"now": now, "stale": now - stale_after_s, "limit": limit})
        return [(r["result_id"], r["owner"]) for r in rows]

    def finish_send(self, result_id: str, error: str | None, seg_uid: str | None,
                    retry_after_s: float = 60.0) -> None:
        """Record a send's outcome: sent (with the SEG's SOP Instance UID), or failed and
        due again after a back-off that doubles with each failure (``retry_after_s``
        first, at most :data:`MAX_BACKOFF_S`)."""
        now = time.time()
        with self._connect() as db:
            if error is None:
                db.execute("UPDATE pacs_sends SET state = 'sent', attempts = attempts + 1, "
                           "last_error = NULL, updated = :now, sent_at = :now, "
                           "seg_sop_uid = :uid, next_attempt = NULL WHERE result_id = :id",
                           {"now": now, "uid": seg_uid, "id": result_id})
                return
            attempts = int(db.scalar("SELECT attempts FROM pacs_sends WHERE result_id = :id",
                                     {"id": result_id}) or 0) + 1
            wait = min(retry_after_s * 2 ** min(attempts - 1, 16), MAX_BACKOFF_S)
            db.execute("UPDATE pacs_sends SET state = 'failed', attempts = :n, "
                       "last_error = :error, updated = :now, next_attempt = :next "
                       "WHERE result_id = :id",
                       {"n": attempts, "error": error, "now": now, "next": now + wait,
                        "id": result_id})

    def unfinished_sends(self, stale_after_s: float, limit: int = 500) -> list[tuple[str, str]]:
        """``(result_id, owner)`` of sends not yet done (queued, failed, or claimed longer
        than ``stale_after_s`` ago), oldest first."""
        with self._connect(write=False) as db:
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
            rows = db.all(
                "SELECT result_id, owner FROM pacs_sends WHERE state IN ('queued', 'failed') "
                "OR (state = 'sending' AND updated < :stale) ORDER BY updated LIMIT :limit",
                {"stale": time.time() - stale_after_s, "limit": limit})
        return [(r["result_id"], r["owner"]) for r in rows]

    # -- reviews: the radiologist's verdict on a result ----------------------------

    def add_review(self, review: Review) -> None:
        """Keep a reviewer's verdict on a result (their later verdict replaces it)."""
        with self._connect() as db:
            db.execute("INSERT INTO reviews (result_id, reviewer, reviewer_name, created, agrees, "
                       "reason, corrected_rle) VALUES (:r, :who, :name, :t, :a, :reason, :rle) "
                       "ON CONFLICT (result_id, reviewer) DO UPDATE SET created = excluded.created, "
                       "reviewer_name = excluded.reviewer_name, agrees = excluded.agrees, "
                       "reason = excluded.reason, corrected_rle = excluded.corrected_rle",
                       {"r": review.result_id, "who": review.reviewer,
                        "name": review.reviewer_name, "t": review.created,
                        "a": int(review.agrees), "reason": review.reason,
                        "rle": review.corrected_rle})

    def reviews(self, result_id: str) -> list[Review]:
        """Every reviewer's verdict on a result, newest first."""
        with self._connect(write=False) as db:
            rows = db.all("SELECT * FROM reviews WHERE result_id = :r ORDER BY created DESC",
                          {"r": result_id})
        return [_review(r) for r in rows]

    def latest_reviews(self, result_ids: list[str]) -> dict[str, Review]:
        """The newest review of each of the results that have one."""
        if not result_ids:
            return {}
        names = {f"r{i}": rid for i, rid in enumerate(result_ids)}
        with self._connect(write=False) as db:
            rows = db.all(f"SELECT * FROM reviews WHERE result_id IN "
                          f"({', '.join(':' + n for n in names)}) ORDER BY created", names)
        return {r["result_id"]: _review(r) for r in rows}

    def reviewed(self, scope: "str | Scope | None",
                 since: float = 0.0) -> list[tuple[ResultRow, Review]]:
        """The results ``scope`` may read (``None``: every result, for the operator) that
        have a review since ``since``, each with its newest review (the running agreement
        and the export)."""
        where, args = _visible(scope)
        with self._connect(write=False) as db:
            rows = db.all(f"SELECT * FROM results WHERE {where} AND id IN (SELECT result_id "
                          f"FROM reviews WHERE created >= :since) ORDER BY created",
                          {**args, "since": since})
        results = [_from_sql(r) for r in rows]
        latest = self.latest_reviews([r.id for r in results])
        return [(r, latest[r.id]) for r in results if r.id in latest]

    # -- the audit trail (append-only) ----------------------------------------------

    def record(self, actor: str, action: str, result_id: str | None = None,
               address: str | None = None, team_id: int | None = None,
               detail: str | None = None) -> None:
        """Append one event to the audit trail."""
        with self._connect() as db:
            db.execute("INSERT INTO audit_events (at, actor, team_id, action, result_id, "
                       "address, detail) VALUES (:at, :actor, :team, :action, :rid, :addr, "
                       ":detail)", {"at": time.time(), "actor": actor, "team": team_id,
                                     "action": action, "rid": result_id, "addr": address,
                                     "detail": detail})

    def viewed_since(self, actor: str, result_id: str, since: float) -> bool:
        """Whether ``actor`` viewed ``result_id`` (its page or its API answer) since
        ``since``."""
        with self._connect(write=False) as db:
            return db.scalar("SELECT 1 FROM audit_events WHERE result_id = :rid AND at >= "
                             ":since AND actor = :actor AND action = 'view' LIMIT 1",
                             {"rid": result_id, "since": since, "actor": actor}) is not None

    def events(self, since: float = 0.0, team_id: int | None = None,
               limit: int | None = None) -> list[AuditEvent]:
        """Audit events since ``since`` (of one team's results, if given), oldest first."""
        where, args = "at >= :since", {"since": since}
        if team_id is not None:
            where += " AND team_id = :team"
            args["team"] = team_id
        tail = f" LIMIT {int(limit)}" if limit else ""
        with self._connect(write=False) as db:
            rows = db.all(f"SELECT * FROM audit_events WHERE {where} ORDER BY id{tail}", args)
        return [AuditEvent(r["id"], r["at"], r["actor"], r["team_id"], r["action"],
                           r["result_id"], r["address"], r["detail"]) for r in rows]

    def purge_events(self, older_than_days: float, now: float | None = None) -> int:
        """Delete audit events older than their own retention period; returns how many."""
        cutoff = (now or time.time()) - older_than_days * 86400
        with self._connect() as db:
            return db.execute("DELETE FROM audit_events WHERE at < :c", {"c": cutoff}).rowcount


def _review(r: Mapping) -> Review:
    return Review(r["result_id"], r["reviewer"], r["reviewer_name"], r["created"],
                  bool(r["agrees"]), r["reason"], r["corrected_rle"])
