"""The store: one small repository per kind of record, over one database
(:mod:`app.store.database`) and one file store (:mod:`app.store.files`). Nothing outside
this package opens a connection or writes SQL.

A caller reaches only the room it uses (``store.results.get(…)``,
``store.sessions.open(…)``); the rooms share the database and never import each other.
The store itself keeps what spans them: creating the schema, health, free space, and
deleting results together with their re-reads, sends and reviews.

The rooms take and return records (:mod:`app.store.records`) and bytes, never
connections or paths. The SQL is written once for SQLite and PostgreSQL alike (``ON
CONFLICT``, ``RETURNING``); where they differ (PostgreSQL's ``FOR UPDATE SKIP LOCKED``
for the PACS queue) the method says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from app.store.accounts import Accounts
from app.store.audit import Audit
from app.store.batches import Batches
from app.store.counters import Counters
from app.store.database import DATABASE_NAME, Database, sqlite_url
from app.store.files import open_files
from app.store.reads import Reads
from app.store.records import Scope
from app.store.results import Results
from app.store.reviews import Reviews
from app.store.sends import Sends
from app.store.sessions import Sessions


def _forget(db, ids: list[str]) -> None:
    """Delete the rows of results and of what hangs on them (re-reads, sends, reviews)."""
    for result_id in ids:
        for table, column in (
            ("reads", "result_id"),
            ("pacs_sends", "result_id"),
            ("reviews", "result_id"),
            ("results", "id"),
        ):
            db.execute(f"DELETE FROM {table} WHERE {column} = :id", {"id": result_id})


class Store:
    """Results, re-reads, batches, accounts, login sessions, rate counters, PACS sends,
    reviews and the audit trail: a room each, rows in one database, files beside."""

    def __init__(
        self,
        data_dir: str | Path,
        database_url: str | None = None,
        blob_url: str | None = None,
        reserve_mb: float = 0.0,
    ):
        self.root = Path(data_dir)
        self.files = open_files(blob_url or str(self.root))
        self.db = Database(database_url or sqlite_url(self.root / DATABASE_NAME))
        self.results = Results(self.db, self.files, int(reserve_mb * 2**20))
        self.reads = Reads(self.db)
        self.batches = Batches(self.db)
        self.accounts = Accounts(self.db)
        self.sessions = Sessions(self.db)
        self.counters = Counters(self.db)
        self.sends = Sends(self.db)
        self.reviews = Reviews(self.db)
        self.audit = Audit(self.db)

    @classmethod
    def from_settings(cls, settings) -> "Store":
        """The store the settings name (data folder, database URL, blob URL, free-space
        reserve)."""
        return cls(
            settings.data_dir, settings.database_url, settings.blob_url, settings.min_free_mb
        )

    def init(self) -> None:
        """Create folders and the schema; clear stale half-written results and result
        folders without a row of a crash.
        An existing database is checked first (``PRAGMA quick_check``): a damaged one is
        reported (:attr:`Database.damaged`, ``/readyz``, the log) and left as it is."""
        if self.db.is_sqlite:  # the database file's folder (the data folder)
            self.db.path.parent.mkdir(parents=True, exist_ok=True)
            self.db.path.parent.chmod(0o700)
        self.files.init()
        if self.db.exists and self.db.check() is not None:
            return
        self.db.create_schema()
        # result folders whose row was never written (a worker killed between publishing a
        # result's files and inserting its row); recent ones may be another worker's commit
        self.files.remove_orphans(set(self.results.all_ids()))

    def close(self) -> None:
        """Close this process's pooled database connections (a later query opens new ones)."""
        self.db.close()

    def health(self) -> str | None:
        """``None`` when the database answers and the files can be listed now, else
        what is wrong (``/readyz``)."""
        return self.db.damaged or self.db.ping() or self.files.check()

    def free_bytes(self) -> int | None:
        """Free space on the disk under the store's files (``None``: not a local disk)."""
        return self.files.free_bytes()

    def delete(self, result_id: str, owner: "str | Scope") -> bool:
        """Delete a result ``owner`` may read with its re-reads, send and reviews, files
        first and then the rows: on a full disk the files free the space the database
        needs to record the deletion."""
        if self.results.get(result_id, owner) is None:
            return False
        self.files.delete(result_id)
        with self.db._connect() as db:
            _forget(db, [result_id])
        return True

    def purge(self, older_than_days: float, now: float | None = None) -> int:
        """Delete results (rows and files together, with their re-reads, sends and
        reviews; an audit event each) and batches older than the retention period, and
        files without a row (a node that died between writing files and their row)."""
        cutoff = (now or time.time()) - older_than_days * 86400
        with self.db._connect() as db:
            ids = [
                r["id"]
                for r in db.all(
                    "SELECT id FROM results WHERE created < :cutoff", {"cutoff": cutoff}
                )
            ]
            for result_id in ids:
                self.files.delete(result_id)
                db.execute(
                    "INSERT INTO audit_events (at, actor, action, result_id, team_id) "
                    "SELECT :at, 'retention', 'purge', id, team_id FROM results "
                    "WHERE id = :id",
                    {"at": time.time(), "id": result_id},
                )
            _forget(db, ids)
            db.execute("DELETE FROM batches WHERE created < :cutoff", {"cutoff": cutoff})
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
        self.files.remove_orphans(set(self.results.all_ids()))
        return len(ids)
