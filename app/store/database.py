"""The database under the store, by URL (``PNEUMO_DATABASE_URL``): the SQLite file in the
data folder (the default, WAL mode: one machine) or a shared PostgreSQL database
(``postgresql://user:password@host/db``: several app nodes and PACS workers).

Both go through SQLAlchemy Core with plain SQL that both dialects accept; the schema is
made and upgraded by the versioned migrations in :mod:`app.store.migrations`. Every query
runs inside one transaction (:meth:`Database._connect`), and the engines' failures become
the store's own errors:

* :class:`StoreDamaged`: a damaged SQLite file (``PRAGMA quick_check`` or SQLite's own
  errors); every later use stops until it is restored from a backup;
* :class:`StoreUnavailable`: the database server cannot be reached (down, restarting);
  the next query tries again, so the service recovers on its own;
* :class:`StoreFull`: the disk under the database is full (an ``OSError``, ENOSPC).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import weakref
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from sqlalchemy import create_engine, event, exc as sa_exc, text
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.pool import NullPool

from app.settings import without_password
from app.store import migrations

log = logging.getLogger(__name__)

#: The default database: this file in the data folder.
DATABASE_NAME = "pneumo.sqlite3"


class StoreProblem(Exception):
    """The database cannot serve this request (503 for a request)."""

    code = "database_unavailable"
    http_status = 503


class StoreDamaged(StoreProblem):
    """The results database is damaged: nothing more is read from or written to it until
    it is restored from a backup (``pneumo restore``). The message is the database's own
    (no patient data)."""

    code = "database_damaged"

    def __str__(self) -> str:
        return (
            f"The results database is damaged ({self.args[0]}). Nothing is read or "
            "written until an administrator restores it from a backup "
            "(pneumo restore; README, Backup and restore)."
        )


class StoreUnavailable(StoreProblem):
    """The database server cannot be reached now (stopped, restarting, network); the
    next request tries again."""

    code = "database_unavailable"

    def __str__(self) -> str:
        return (
            f"The results database cannot be reached ({self.args[0]}). Try again in a "
            "moment; if it persists, tell the administrator."
        )


class StoreFull(OSError):
    """The disk under the store is full (the database could not write)."""

    def __init__(self, reason: str):
        super().__init__(errno.ENOSPC, f"the disk under the results is full ({reason})")


def sqlite_url(path: str | Path) -> str:
    """The URL of a SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def _one_line(text: str, lines: int | None = None) -> str:
    """A driver's message on one line: its non-empty lines (the first ``lines`` of them),
    without the bullet stars SQLite's reports use, joined by "; "."""
    kept = [line.strip(" *") for line in text.splitlines() if line.strip(" *")]
    return "; ".join(kept[:lines])


def _first_line(exc: BaseException) -> str:
    return _one_line(str(exc), 2) or type(exc).__name__


def _is_full(exc: BaseException) -> bool:
    return "disk is full" in str(exc).lower() or getattr(exc, "sqlstate", None) == "53100"


def _is_sqlite_damage(exc: BaseException) -> bool:
    """True for the errors of a damaged file (not a busy or locked one, not a constraint)."""
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
        return False
    text_ = str(exc).lower()
    return (
        type(exc) is sqlite3.DatabaseError
        or "malformed" in text_
        or "not a database" in text_
        or "no such table" in text_
    )


class Tx:
    """One transaction on the database: plain SQL with ``:name`` parameters."""

    def __init__(self, conn: Connection, dialect: str):
        self._conn = conn
        #: ``"sqlite"`` or ``"postgresql"``.
        self.dialect = dialect

    def execute(self, sql: str, params: Mapping[str, Any] | None = None):
        """Run one statement; the SQLAlchemy result."""
        return self._conn.execute(text(sql), dict(params or {}))

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> RowMapping | None:
        """The first row as a mapping, or ``None``."""
        return self.execute(sql, params).mappings().first()

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[RowMapping]:
        """Every row as a mapping."""
        return list(self.execute(sql, params).mappings())

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or ``None``."""
        return self.execute(sql, params).scalar()


def _sqlite_engine(url: str) -> Engine:
    """A SQLite engine: a connection per transaction (as light as the file), WAL mode,
    and transactions that SQLAlchemy begins itself, so DDL is transactional too."""
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # no implicit BEGIN/COMMIT from sqlite3
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN"
        )

    return engine


def _postgres_engine(url: str) -> Engine:
    """A PostgreSQL engine (psycopg 3): a small pool per process whose connections are
    tested before use, so a restarted server is picked up without restarting us."""
    scheme, rest = url.split("://", 1)
    if "+" not in scheme:
        scheme = "postgresql+psycopg"
    return create_engine(
        f"{scheme}://{rest}",
        pool_pre_ping=True,
        pool_size=4,
        max_overflow=8,
        pool_timeout=15,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


class Database:
    """The database at ``url`` (``sqlite:///…`` or ``postgresql://…``): its schema, its
    health and its transactions."""

    def __init__(self, url: str):
        self.url = url
        scheme = urlsplit(url).scheme.split("+")[0]
        if scheme in ("postgres", "postgresql"):
            self.dialect = "postgresql"
        elif scheme == "sqlite":
            self.dialect = "sqlite"
        else:
            raise ValueError(
                f"PNEUMO_DATABASE_URL must be sqlite:///… or postgresql://…, "
                f"got {without_password(url)!r}"
            )
        self._db_path = Path(url.split(":///", 1)[1]) if self.dialect == "sqlite" else None
        self._engine: Engine | None = None
        self._engine_pid = 0
        #: Why the database is unusable (its own message), or None while it is sound.
        self.damaged: str | None = None

    @property
    def path(self) -> Path | None:
        """The SQLite file (``None`` for a server database)."""
        return self._db_path

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite file (one machine)."""
        return self.dialect == "sqlite"

    @property
    def engine(self) -> Engine:
        """This process's engine (made anew after a fork: connections never cross one)."""
        if self._engine is None or self._engine_pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)
            make = _sqlite_engine if self.is_sqlite else _postgres_engine
            self._engine, self._engine_pid = make(self.url), os.getpid()
            # pooled connections close with the store (tests and commands make many)
            weakref.finalize(self, self._engine.dispose)
        return self._engine

    def close(self) -> None:
        """Close this process's pooled connections (a later query opens new ones)."""
        if self._engine is not None and self._engine_pid == os.getpid():
            self._engine.dispose()

    def create_schema(self, target: int = migrations.HEAD) -> int:
        """Create or upgrade the schema (to the newest version unless ``target`` says
        otherwise), holding the write lock; returns the version reached."""
        with self._connect() as db:
            version = migrations.migrate(db, target)
        if self.is_sqlite:
            for f in self._db_path.parent.glob(self._db_path.name + "*"):  # and its WAL files
                os.chmod(f, 0o600)
        return version

    @property
    def exists(self) -> bool:
        """True when the store was initialised before (a server database always is)."""
        return self._db_path.exists() if self.is_sqlite else True

    @contextlib.contextmanager
    def _connect(self, write: bool = True) -> Iterator[Tx]:
        """One transaction, committed when the block ends without an error.

        A writing transaction (the default) takes SQLite's write lock when it begins
        (``BEGIN IMMEDIATE``), waiting up to the busy timeout for another writer: a
        deferred transaction that reads and then writes cannot be upgraded once another
        connection has written in WAL mode, and SQLite refuses it at once ("database is
        locked") instead of waiting. ``write=False`` for transactions that only read:
        they never block and are never blocked. PostgreSQL's transactions are unaffected.
        """
        if self.damaged:
            raise StoreDamaged(self.damaged)
        try:
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(immediate=True)
                with conn.begin():
                    yield Tx(conn, self.dialect)
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from None
        except sa_exc.TimeoutError as exc:  # every pooled connection busy for pool_timeout
            raise StoreUnavailable("no free database connection") from exc

    def _translate(self, exc: sa_exc.DBAPIError) -> BaseException:
        orig = exc.orig if exc.orig is not None else exc
        if _is_full(orig):
            return StoreFull(_first_line(orig))
        if self.is_sqlite:
            if _is_sqlite_damage(orig):
                self._mark_damaged(str(orig))
                return StoreDamaged(self.damaged)
            if "disk i/o error" in str(orig).lower():
                # e.g. the shared-memory file cannot grow on a full disk: a 503 that says so,
                # and the next connection tries again once space is back
                free = shutil.disk_usage(self._db_path.parent).free
                log.warning(
                    "the results database could not be opened: %s (%d MB free)",
                    _first_line(orig),
                    free // 2**20,
                )
                return (
                    StoreFull(_first_line(orig))
                    if free < 2**26
                    else StoreUnavailable(_first_line(orig))
                )
            return exc
        if (
            isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
            or exc.connection_invalidated
        ):
            log.warning("the results database cannot be reached: %s", _first_line(orig))
            return StoreUnavailable(_first_line(orig))
        return exc

    def _mark_damaged(self, reason: str) -> None:
        reason = _one_line(reason)
        if not self.damaged:
            log.error("the results database %s is damaged: %s", DATABASE_NAME, reason)
        self.damaged = reason

    def check(self) -> str | None:
        """Check a SQLite file's integrity (``PRAGMA quick_check``, on a plain connection:
        its report names the damaged pages); the problem, or None. A PostgreSQL server
        checks its own pages; unreachable is not damaged."""
        if not self.is_sqlite:
            return None
        if self.damaged:
            return self.damaged
        con = None
        try:
            con = sqlite3.connect(self._db_path, timeout=30)
            rows = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            if not _is_sqlite_damage(exc):
                raise
            rows = [str(exc)]
        finally:
            if con is not None:
                con.close()
        if rows != ["ok"]:
            self._mark_damaged("; ".join(rows[:3]))
        return self.damaged

    def ping(self) -> str | None:
        """``None`` when a query answers now, else why not (``/readyz``)."""
        try:
            with self._connect(write=False) as db:
                db.scalar("SELECT 1")
        except (StoreProblem, OSError, sa_exc.SQLAlchemyError) as exc:
            return str(exc)
        return None


class Repository:
    """One room of the store: the queries over one kind of record, on the database it
    shares with the other rooms (:class:`app.store.repository.Store` holds one of each)."""

    def __init__(self, db: Database):
        self._db = db

    def _connect(self, write: bool = True) -> contextlib.AbstractContextManager[Tx]:
        """One transaction on the shared database (:meth:`Database._connect`)."""
        return self._db._connect(write)

    def _one(self, sql: str, args: Mapping[str, Any]) -> RowMapping | None:
        """The first row of a query that only reads, or ``None``."""
        with self._connect(write=False) as db:
            return db.one(sql, args)
