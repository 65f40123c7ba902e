"""Result storage: SQLite rows plus a folder of files per result.

A result becomes visible only when its folder is complete: files are
written to ``tmp/<id>`` and renamed into ``results/<id>`` before the row is
inserted, so a crash mid-request never leaves a half-written result.
Folder and file names on disk are generated ids, never client-supplied names;
the uploader's own file name is kept in the row, shown to its owner only.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

@dataclass(frozen=True)
class Field:
    """One stored field of a result: its SQLite column and its public JSON form.

    The table, the row object, the API's JSON and the OpenAPI schema are all
    made from :data:`FIELDS`, so they cannot drift apart.
    """

    name: str
    sql: str                    # column type (NOT NULL columns added later carry a DEFAULT)
    schema: dict | None         # JSON schema of the public value; None: never public
    description: str = ""
    kind: str = "value"         # "value", "bool" (INTEGER 0/1) or "json" (TEXT)
    public: str | None = None   # the public name when it differs from ``name``
    digits: int | None = None   # rounding of the public value

    @property
    def public_name(self) -> str:
        """The field's name in the API's JSON."""
        return self.public or self.name


FIELDS: tuple[Field, ...] = (
    Field("id", "TEXT PRIMARY KEY", {"type": "string"}, "result id (unguessable)"),
    Field("owner", "TEXT NOT NULL", None),
    Field("created", "REAL NOT NULL", {"type": "number"}, "upload time, seconds since 1970 (UTC)"),
    Field("source_format", "TEXT NOT NULL", {"type": "string", "enum": ["DICOM", "PNG", "JPEG"]}),
    Field("positive", "INTEGER NOT NULL", {"type": "boolean"},
          "the verdict at the operating point: pneumothorax suspected", kind="bool"),
    Field("probability", "REAL NOT NULL", {"type": "number", "minimum": 0, "maximum": 1},
          "image-level probability of pneumothorax (calibrated), or an uncalibrated score "
          "when probability_kind says so", digits=4),
    Field("threshold", "REAL NOT NULL", {"type": "number"},
          "the operating point's threshold on probability (positive at or above)", digits=4),
    Field("area_px", "INTEGER NOT NULL", {"type": "integer"}, "outlined area in pixels"),
    Field("area_cm2", "REAL", {"type": ["number", "null"]},
          "outlined area in cm² (null without a plausible pixel spacing)", digits=2),
    Field("side", "TEXT NOT NULL", {"type": "object"}, "patient side of the outlined region",
          kind="json"),
    Field("meta", "TEXT NOT NULL", {"type": "object"},
          "image metadata safe to show (no patient identifiers)", kind="json", public="metadata"),
    Field("identifiers", "TEXT NOT NULL", None, kind="json"),
    Field("model", "TEXT NOT NULL", {"type": "string"}, "model name and version"),
    Field("rle", "TEXT NOT NULL", {"type": "string"},
          "SIIM relative RLE, column-major, -1 if empty", public="mask_rle"),
    Field("timings", "TEXT NOT NULL", None, kind="json"),
    Field("file_name", "TEXT NOT NULL DEFAULT ''", {"type": "string"},
          "the uploader's own file name (shown to its owner only)", public="file"),
    Field("probability_kind", "TEXT NOT NULL DEFAULT 'score'",
          {"type": "string", "enum": ["probability", "score"]},
          "probability: calibrated; score: an uncalibrated model output"),
    Field("operating_point", "TEXT NOT NULL DEFAULT '{}'", {"type": "object"},
          "the verdict's rule: name, threshold (on the shown probability's scale) and "
          "calibrated_threshold, the sensitivity and specificity it had on the tune split "
          "(split), the mask threshold of the outlined region, the review band, the "
          "prevalence the probability is calibrated at and the site's (site_prevalence), "
          "and the heat map's scale",
          kind="json"),
    Field("batch", "TEXT NOT NULL DEFAULT ''", {"type": "string"},
          "id of the upload batch (several files sent at once; its page is /batches/<id>), "
          "empty for a single file"),
    Field("finding_below_threshold", "INTEGER NOT NULL DEFAULT 0", {"type": "boolean"},
          "negative verdict with the probability in the review band (between the triage "
          "point and the operating point): look again", kind="bool"),
)
#: Public fields computed from the row rather than stored.
DERIVED_SCHEMA = {
    "verdict": {"type": "string", "enum": ["pneumothorax suspected", "not detected"]},
}

SCHEMA = ("CREATE TABLE IF NOT EXISTS results (\n    "
          + ",\n    ".join(f"{f.name} {f.sql}" for f in FIELDS)
          + "\n);\nCREATE INDEX IF NOT EXISTS results_owner ON results(owner, created);\n"
          "CREATE TABLE IF NOT EXISTS batches (\n    id TEXT PRIMARY KEY,\n    owner TEXT NOT NULL,\n"
          "    created REAL NOT NULL,\n    files INTEGER NOT NULL,\n"
          "    errors TEXT NOT NULL DEFAULT '[]'\n);\n")

ID_BYTES = 16  # 128-bit unguessable ids


@dataclass
class ResultRow:
    """One stored result (fields in the order of :data:`FIELDS`)."""

    id: str
    owner: str
    created: float
    source_format: str
    positive: bool
    probability: float
    threshold: float
    area_px: int
    area_cm2: float | None
    side: dict
    meta: dict
    identifiers: dict
    model: str
    rle: str
    timings: dict
    file_name: str = ""
    probability_kind: str = "score"
    operating_point: dict = field(default_factory=dict)
    batch: str = ""
    finding_below_threshold: bool = False

    @property
    def verdict(self) -> str:
        """'pneumothorax suspected' or 'not detected'."""
        return "pneumothorax suspected" if self.positive else "not detected"

    def public_dict(self) -> dict:
        """JSON for the API and pages: every public field, never the patient identifiers."""
        out = {}
        for f in FIELDS:
            if f.schema is None:
                continue
            value = getattr(self, f.name)
            if f.digits is not None and value is not None:
                value = round(value, f.digits)
            out[f.public_name] = value
        out["verdict"] = self.verdict
        return out


def public_schema() -> dict:
    """JSON schema of :meth:`ResultRow.public_dict` (the OpenAPI result, without links)."""
    props = {f.public_name: dict(f.schema, **({"description": f.description}
                                              if f.description else {}))
             for f in FIELDS if f.schema is not None}
    props.update(DERIVED_SCHEMA)
    return {"type": "object", "properties": props, "required": sorted(props)}


def _to_sql(row: ResultRow) -> tuple:
    values = []
    for f in FIELDS:
        v = getattr(row, f.name)
        values.append(json.dumps(v) if f.kind == "json" else int(v) if f.kind == "bool" else v)
    return tuple(values)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Databases made by an earlier version get the newer columns (with their defaults)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(results)")}
    for f in FIELDS:
        if f.name not in have:
            db.execute(f"ALTER TABLE results ADD COLUMN {f.name} {f.sql}")


def new_id() -> str:
    """A new unguessable result id."""
    return secrets.token_urlsafe(ID_BYTES)


def valid_id(result_id: str) -> bool:
    """True when ``result_id`` has the shape of an id (nothing else reaches the disk)."""
    return (isinstance(result_id, str) and 16 <= len(result_id) <= 64
            and all(c.isalnum() or c in "-_" for c in result_id))


class Store:
    """SQLite + files under ``data_dir``."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)
        self.results_dir = self.root / "results"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "pneumo.sqlite3"

    def init(self) -> None:
        """Create folders and the schema; clear stale half-written results of a crash."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.results_dir, self.tmp_dir):
            os.chmod(folder, 0o700)  # stored images and DICOMs: the service's user only
        for leftover in self.tmp_dir.iterdir():
            # another worker may be writing a fresh one right now
            if leftover.stat().st_mtime < time.time() - 3600:
                shutil.rmtree(leftover, ignore_errors=True)
        from app import users
        with self.connect() as db:
            db.executescript(SCHEMA)
            _add_missing_columns(db)
            users.init(db)
        for f in self.root.glob(self.db_path.name + "*"):  # the database and its WAL files
            os.chmod(f, 0o600)

    def connect(self) -> sqlite3.Connection:
        """A connection to the results database (WAL, rows by name)."""
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # -- writing -------------------------------------------------------------

    def staging(self, result_id: str) -> Path:
        """A fresh private folder where a result's files are written before commit."""
        path = self.tmp_dir / result_id
        path.mkdir(parents=True)
        return path

    def commit(self, row: ResultRow, staged: Path) -> None:
        """Move a complete staged folder into place, then insert the row."""
        final = self.results_dir / row.id
        os.replace(staged, final)
        try:
            with self.connect() as db:
                db.execute(f"INSERT INTO results ({', '.join(f.name for f in FIELDS)}) "
                           f"VALUES ({', '.join('?' for _ in FIELDS)})", _to_sql(row))
        except Exception:
            shutil.rmtree(final, ignore_errors=True)
            raise

    def discard(self, staged: Path) -> None:
        """Remove a staged folder of a failed upload."""
        shutil.rmtree(staged, ignore_errors=True)

    # -- reading -------------------------------------------------------------

    @staticmethod
    def _row(r: sqlite3.Row) -> ResultRow:
        values = {}
        for f in FIELDS:
            v = r[f.name]
            values[f.name] = json.loads(v) if f.kind == "json" else bool(v) if f.kind == "bool" \
                else v
        return ResultRow(**values)

    def get(self, result_id: str, owner: str) -> ResultRow | None:
        """The result if it exists and belongs to ``owner``; else ``None``."""
        if not valid_id(result_id):
            return None
        with self.connect() as db:
            r = db.execute("SELECT * FROM results WHERE id = ? AND owner = ?",
                           (result_id, owner)).fetchone()
        return self._row(r) if r else None

    def list(self, owner: str, sort: str = "newest", limit: int = 200,
             batch: str | None = None) -> list[ResultRow]:
        """An owner's results (of one batch, if given): newest first, by probability
        (triage), or in upload order (``sort="upload"``)."""
        order = {"probability": "probability DESC, created DESC",
                 "upload": "created ASC"}.get(sort, "created DESC")
        where, args = "owner = ?", [owner]
        if batch is not None:
            where, args = where + " AND batch = ?", args + [batch]
        with self.connect() as db:
            rows = db.execute(f"SELECT * FROM results WHERE {where} ORDER BY {order} LIMIT ?",
                              (*args, limit)).fetchall()
        return [self._row(r) for r in rows]

    def add_batch(self, batch_id: str, owner: str, files: int, errors: list[dict]) -> None:
        """Record an upload batch: how many files were sent and the refused ones' messages."""
        with self.connect() as db:
            db.execute("INSERT INTO batches (id, owner, created, files, errors) VALUES (?, ?, ?, ?, ?)",
                       (batch_id, owner, time.time(), files, json.dumps(errors)))

    def get_batch(self, batch_id: str, owner: str) -> dict | None:
        """A batch of ``owner`` (``id``, ``created``, ``files``, ``errors``), else ``None``."""
        if not valid_id(batch_id):
            return None
        with self.connect() as db:
            r = db.execute("SELECT * FROM batches WHERE id = ? AND owner = ?",
                           (batch_id, owner)).fetchone()
        if r is None:
            return None
        return {"id": r["id"], "created": r["created"], "files": r["files"],
                "errors": json.loads(r["errors"])}

    def file(self, result_id: str, name: str) -> Path:
        """Path of one file of a result (it may not exist yet)."""
        return self.results_dir / result_id / name

    # -- retention -----------------------------------------------------------

    def delete(self, result_id: str, owner: str) -> bool:
        """Delete an owner's result, row and files together."""
        with self.connect() as db:
            n = db.execute("DELETE FROM results WHERE id = ? AND owner = ?",
                           (result_id, owner)).rowcount
        if n:
            shutil.rmtree(self.results_dir / result_id, ignore_errors=True)
        return bool(n)

    def purge(self, older_than_days: float, now: float | None = None) -> int:
        """Delete results (rows and files together) older than the retention period."""
        cutoff = (now or time.time()) - older_than_days * 86400
        with self.connect() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM results WHERE created < ?",
                                               (cutoff,))]
            for result_id in ids:
                shutil.rmtree(self.results_dir / result_id, ignore_errors=True)
                db.execute("DELETE FROM results WHERE id = ?", (result_id,))
            db.execute("DELETE FROM batches WHERE created < ?", (cutoff,))
        # folders without a row (e.g. a crash between rename and insert)
        known = set(self.all_ids())
        for folder in self.results_dir.iterdir():
            recent = folder.stat().st_mtime > time.time() - 3600  # may be mid-commit
            if folder.name not in known and not recent:
                shutil.rmtree(folder, ignore_errors=True)
        return len(ids)

    def all_ids(self) -> list[str]:
        """Every stored result id."""
        with self.connect() as db:
            return [r["id"] for r in db.execute("SELECT id FROM results")]
