"""Result storage: SQLite rows plus a folder of files per result.

A result becomes visible only when its folder is complete: files are
written to ``tmp/<id>`` and renamed into ``results/<id>`` before the row is
inserted, so a crash mid-request never leaves a half-written result.
Stored file names are generated ids, never client-supplied names.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    source_format TEXT NOT NULL,
    positive INTEGER NOT NULL,
    probability REAL NOT NULL,
    threshold REAL NOT NULL,
    area_px INTEGER NOT NULL,
    area_cm2 REAL,
    side TEXT NOT NULL,
    meta TEXT NOT NULL,
    identifiers TEXT NOT NULL,
    model TEXT NOT NULL,
    rle TEXT NOT NULL,
    timings TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_owner ON results(owner, created);
"""

ID_BYTES = 16  # 128-bit unguessable ids


@dataclass
class ResultRow:
    """One stored result."""

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

    @property
    def verdict(self) -> str:
        return "pneumothorax suspected" if self.positive else "not detected"

    def public_dict(self) -> dict:
        """JSON for the API and pages: everything but the patient identifiers."""
        return {
            "id": self.id, "created": self.created, "source_format": self.source_format,
            "verdict": self.verdict, "positive": self.positive,
            "probability": round(self.probability, 4), "threshold": round(self.threshold, 4),
            "area_px": self.area_px,
            "area_cm2": None if self.area_cm2 is None else round(self.area_cm2, 2),
            "side": self.side, "metadata": self.meta, "model": self.model,
            "mask_rle": self.rle,
        }


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def valid_id(result_id: str) -> bool:
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
        for leftover in self.tmp_dir.iterdir():
            # another worker may be writing a fresh one right now
            if leftover.stat().st_mtime < time.time() - 3600:
                shutil.rmtree(leftover, ignore_errors=True)
        from app import users
        with self.connect() as db:
            db.executescript(SCHEMA)
            users.init(db)

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # -- writing -------------------------------------------------------------

    def staging(self, result_id: str) -> Path:
        path = self.tmp_dir / result_id
        path.mkdir(parents=True)
        return path

    def commit(self, row: ResultRow, staged: Path) -> None:
        """Move a complete staged folder into place, then insert the row."""
        final = self.results_dir / row.id
        os.replace(staged, final)
        try:
            with self.connect() as db:
                db.execute(
                    "INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (row.id, row.owner, row.created, row.source_format, int(row.positive),
                     row.probability, row.threshold, row.area_px, row.area_cm2,
                     json.dumps(row.side), json.dumps(row.meta), json.dumps(row.identifiers),
                     row.model, row.rle, json.dumps(row.timings)))
        except Exception:
            shutil.rmtree(final, ignore_errors=True)
            raise

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    # -- reading -------------------------------------------------------------

    @staticmethod
    def _row(r: sqlite3.Row) -> ResultRow:
        return ResultRow(
            id=r["id"], owner=r["owner"], created=r["created"],
            source_format=r["source_format"], positive=bool(r["positive"]),
            probability=r["probability"], threshold=r["threshold"], area_px=r["area_px"],
            area_cm2=r["area_cm2"], side=json.loads(r["side"]), meta=json.loads(r["meta"]),
            identifiers=json.loads(r["identifiers"]), model=r["model"], rle=r["rle"],
            timings=json.loads(r["timings"]))

    def get(self, result_id: str, owner: str) -> ResultRow | None:
        """The result if it exists and belongs to ``owner``; else ``None``."""
        if not valid_id(result_id):
            return None
        with self.connect() as db:
            r = db.execute("SELECT * FROM results WHERE id = ? AND owner = ?",
                           (result_id, owner)).fetchone()
        return self._row(r) if r else None

    def list(self, owner: str, sort: str = "newest", limit: int = 200) -> list[ResultRow]:
        order = "probability DESC, created DESC" if sort == "probability" else "created DESC"
        with self.connect() as db:
            rows = db.execute(f"SELECT * FROM results WHERE owner = ? ORDER BY {order} LIMIT ?",
                              (owner, limit)).fetchall()
        return [self._row(r) for r in rows]

    def file(self, result_id: str, name: str) -> Path:
        return self.results_dir / result_id / name

    # -- retention -----------------------------------------------------------

    def delete(self, result_id: str, owner: str) -> bool:
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
        # folders without a row (e.g. a crash between rename and insert)
        known = set(self.all_ids())
        for folder in self.results_dir.iterdir():
            recent = folder.stat().st_mtime > time.time() - 3600  # may be mid-commit
            if folder.name not in known and not recent:
                shutil.rmtree(folder, ignore_errors=True)
        return len(ids)

    def all_ids(self) -> list[str]:
        with self.connect() as db:
            return [r["id"] for r in db.execute("SELECT id FROM results")]
