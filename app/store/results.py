"""Results: a row each in the database, their files beside (:mod:`app.store.files`)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from app.store.database import Database, Repository, StoreFull
from app.store.files import BlobFiles, LocalFiles, Staged
from app.store.records import FIELDS, ResultRow, Scope, valid_id
from app.store.rows import from_sql, to_sql, visible


#: The orders a list of results can take: the columns of its key, each descending (or
#: ascending for ``upload``), the id last so that every row has its own place.
ORDERS = {
    "newest": (("created", "id"), "DESC"),
    "probability": (("probability", "created", "id"), "DESC"),
    "upload": (("created", "id"), "ASC"),
}


#: The review states a list can be filtered by.
STATUSES = ("unreviewed", "reviewed", "disagreed")
#: The verdicts a list can be filtered by (``positive`` is pneumothorax suspected).
VERDICTS = ("positive", "negative")


@dataclass(frozen=True)
class Filter:
    """Which of the results a caller may read a list keeps: a review state (see
    :data:`STATUSES`: no review yet, reviewed, a reviewer disagreed), a verdict (see
    :data:`VERDICTS`), an upload time range ``[since, until)`` in seconds since 1970, one
    batch, one uploader (an owner key) and a search text (found in the file name,
    accession number, patient name or id; case does not matter). ``None`` or empty: any."""

    status: str | None = None
    verdict: str | None = None
    since: float | None = None
    until: float | None = None
    batch: str | None = None
    uploader: str | None = None
    text: str = ""

    def __post_init__(self):
        if self.status not in (None, *STATUSES):
            raise ValueError(f"status must be one of: {', '.join(STATUSES)}.")
        if self.verdict not in (None, *VERDICTS):
            raise ValueError(f"verdict must be one of: {', '.join(VERDICTS)}.")

    def sql(self) -> tuple[str, dict]:
        """The condition (and its parameters) on ``results`` rows."""
        where, args = [], {}
        if self.status == "unreviewed":
            where.append("NOT EXISTS (SELECT 1 FROM reviews v WHERE v.result_id = results.id)")
        elif self.status == "reviewed":
            where.append("EXISTS (SELECT 1 FROM reviews v WHERE v.result_id = results.id)")
        elif self.status == "disagreed":
            where.append(
                "EXISTS (SELECT 1 FROM reviews v WHERE v.result_id = results.id AND v.agrees = 0)"
            )
        if self.verdict:
            where.append("positive = :f_positive")
            args["f_positive"] = int(self.verdict == "positive")
        if self.since is not None:
            where.append("created >= :f_since")
            args["f_since"] = float(self.since)
        if self.until is not None:
            where.append("created < :f_until")
            args["f_until"] = float(self.until)
        if self.batch:
            where.append("batch = :f_batch")
            args["f_batch"] = self.batch
        if self.uploader:
            where.append("owner = :f_uploader")
            args["f_uploader"] = self.uploader
        text = " ".join(self.text.lower().split())
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("search_text LIKE :f_text ESCAPE '\\'")
            args["f_text"] = f"%{escaped}%"
        return " AND ".join(where) or "1 = 1", args


class BadCursor(ValueError):
    """A page cursor that this store did not give out (or for another order)."""


@dataclass(frozen=True)
class Page:
    """One page of a list of results: its rows, how many the whole list holds, and the
    cursor of the next page (``None`` on the last)."""

    rows: list[ResultRow]
    total: int
    next: str | None


def _cursor(sort: str, row: ResultRow) -> str:
    key = [getattr(row, c) for c in ORDERS[sort][0]]
    return base64.urlsafe_b64encode(json.dumps([sort, *key]).encode()).decode().rstrip("=")


def _after(sort: str, cursor: str) -> tuple[str, dict]:
    """The condition that keeps the rows after ``cursor`` (keyset paging: a row's place
    is its key, so rows added or deleted meanwhile never shift a page)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, *key = json.loads(raw)
    except (ValueError, TypeError):
        raise BadCursor("not a page cursor of this list") from None
    columns, direction = ORDERS[sort]
    if name != sort or len(key) != len(columns) or not isinstance(key[-1], str):
        raise BadCursor("a page cursor of another order")
    if not all(isinstance(v, (int, float)) for v in key[:-1]):
        raise BadCursor("not a page cursor of this list")
    op = "<" if direction == "DESC" else ">"
    args = {f"k{i}": v for i, v in enumerate(key)}
    # (a, b, c) after (x, y, z): a < x OR (a = x AND (b < y OR (b = y AND c < z)))
    cond = f"{columns[-1]} {op} :k{len(columns) - 1}"
    for i in range(len(columns) - 2, -1, -1):
        cond = f"({columns[i]} {op} :k{i} OR ({columns[i]} = :k{i} AND {cond}))"
    return cond, args


class Results(Repository):
    """Writing, reading and listing results; their files go in and out as bytes."""

    def __init__(self, db: Database, files: LocalFiles | BlobFiles, reserve_bytes: int = 0):
        super().__init__(db)
        self._files = files
        #: Free space on the files' disk that new results and cached renditions leave alone,
        #: so the database (its WAL and shared-memory files) can always grow: reading,
        #: logging in, reviewing and deleting keep working when uploads have filled the disk.
        self.reserve_bytes = reserve_bytes

    def _check_reserve(self, what: str) -> None:
        """Raise :class:`StoreFull` when writing ``what`` would eat into the reserve."""
        free = self._files.free_bytes()
        if free is not None and free < self.reserve_bytes:
            raise StoreFull(
                f"{free / 2**20:.0f} MB free, under the "
                f"{self.reserve_bytes / 2**20:.0f} MB kept for the database; "
                f"{what} not written"
            )

    # -- writing ------------------------------------------------------------------

    def stage(self, result_id: str) -> Staged:
        """Where a new result's files are written before :meth:`commit` (:class:`StoreFull`
        when the disk is down to its reserve)."""
        self._check_reserve("a new result")
        return self._files.stage(result_id)

    def commit(self, row: ResultRow, staged: Staged) -> None:
        """Publish a complete staged result, then insert its row."""
        self._files.publish(staged)
        values = to_sql(row)
        try:
            with self._connect() as db:
                if values["team_id"] is None and row.owner.startswith("user:"):
                    values["team_id"] = db.scalar(
                        "SELECT team_id FROM users WHERE 'user:' || CAST(id AS TEXT) = :o",
                        {"o": row.owner},
                    )
                db.execute(
                    f"INSERT INTO results ({', '.join(f.name for f in FIELDS)}) "
                    f"VALUES ({', '.join(':' + f.name for f in FIELDS)})",
                    values,
                )
        except Exception:
            self._files.delete(row.id)
            raise

    def discard(self, staged: Staged) -> None:
        """Drop the staged files of a failed upload."""
        self._files.discard(staged)

    def add_file(self, result_id: str, name: str, data: bytes) -> bool:
        """Keep a file rendered from a result's own files; ``False`` if the result is gone,
        :class:`StoreFull` when the disk is down to its reserve (serve it uncached)."""
        self._check_reserve("a rendition")
        return self._files.add(result_id, name, data)

    # -- reading ------------------------------------------------------------------

    def get(self, result_id: str, owner: "str | Scope | None") -> ResultRow | None:
        """The result if it exists and ``owner`` may read it (its own, or its team's for a
        team :class:`Scope`; ``None``: whoever owns it); else ``None``."""
        if not valid_id(result_id):
            return None
        where, args = visible(owner)
        r = self._one(
            f"SELECT * FROM results WHERE id = :id AND {where}", {"id": result_id, **args}
        )
        return from_sql(r) if r else None

    def get_any(self, result_id: str) -> ResultRow | None:
        """A result whoever owns it (the operator's commands), else ``None``."""
        return self.get(result_id, None)

    def list(
        self, owner: "str | Scope", sort: str = "newest", limit: int = 200, batch: str | None = None
    ) -> list[ResultRow]:
        """The results ``owner`` may read (of one batch, if given): newest first, by
        probability (triage), or in upload order (``sort="upload"``)."""
        order = {"probability": "probability DESC, created DESC", "upload": "created ASC"}.get(
            sort, "created DESC"
        )
        where, args = visible(owner)
        args["limit"] = limit
        if batch is not None:
            where, args["batch"] = where + " AND batch = :batch", batch
        with self._connect(write=False) as db:
            rows = db.all(
                f"SELECT * FROM results WHERE {where} ORDER BY {order} LIMIT :limit", args
            )
        return [from_sql(r) for r in rows]

    def page(
        self,
        owner: "str | Scope",
        sort: str = "newest",
        limit: int = 50,
        cursor: str | None = None,
        where: Filter | None = None,
    ) -> Page:
        """One page of the results ``owner`` may read (those ``where`` keeps), in
        ``sort`` order (``newest``, ``probability``, ``upload``), after ``cursor`` (a
        :class:`Page`'s ``next``); the total counts the whole list. Every result is on
        exactly one page, however many are added or deleted while someone pages through.

        Raises:
            BadCursor: ``cursor`` is not one of this order's.
        """
        columns, direction = ORDERS[sort]
        seen, args = visible(owner)
        kept, kept_args = (where or Filter()).sql()
        where_sql, args = f"{seen} AND {kept}", {**args, **kept_args}
        after, after_args = _after(sort, cursor) if cursor else ("1 = 1", {})
        order = ", ".join(f"{c} {direction}" for c in columns)
        with self._connect(write=False) as db:
            total = int(db.scalar(f"SELECT COUNT(*) FROM results WHERE {where_sql}", args))
            rows = db.all(
                f"SELECT * FROM results WHERE {where_sql} AND {after} "
                f"ORDER BY {order} LIMIT :limit",
                {**args, **after_args, "limit": limit + 1},
            )
        found = [from_sql(r) for r in rows[:limit]]
        more = len(rows) > limit and found
        return Page(found, total, _cursor(sort, found[-1]) if more else None)

    def first_copy(self, owner: str, digest: str, key: str) -> ResultRow | None:
        """The earliest result that ``owner`` may read (its own, or its team's for a user
        whose role reads the team) of the same file (``digest``) or the same DICOM
        instance (``key``, see :func:`app.store.records.instance_key`), else ``None``."""
        same = ["digest = :d"] if digest else []
        if key:
            same.append("instance_key = :k")
        if not same:
            return None
        r = self._one(
            f"SELECT * FROM results WHERE ({' OR '.join(same)}) AND (owner = :o OR "
            "team_id IN (SELECT team_id FROM users WHERE 'user:' || CAST(id AS TEXT) = :o "
            "AND role IN ('admin', 'radiologist'))) ORDER BY created LIMIT 1",
            {"d": digest, "k": key, "o": owner},
        )
        return from_sql(r) if r else None

    def all_ids(self) -> list[str]:
        """Every stored result id."""
        with self._connect(write=False) as db:
            return [r["id"] for r in db.all("SELECT id FROM results")]

    def between(self, since: float, until: float) -> list[ResultRow]:
        """Every result uploaded in ``[since, until)``, whoever owns it, oldest first
        (the operator's re-reads)."""
        with self._connect(write=False) as db:
            rows = db.all(
                "SELECT * FROM results WHERE created >= :since AND created < :until "
                "ORDER BY created",
                {"since": since, "until": until},
            )
        return [from_sql(r) for r in rows]

    def read_file(self, result_id: str, name: str) -> bytes | None:
        """One file of a result, or ``None``."""
        return self._files.read(result_id, name)

    def has_file(self, result_id: str, name: str) -> bool:
        """True when the result has the file."""
        return self._files.exists(result_id, name)
