"""Backup and restore of the embedded store (the SQLite file and the local folder):
``pneumo backup`` (while the service runs) and ``pneumo restore`` (with the service
stopped). A PostgreSQL database is backed up with its own tools (``pg_dump``) and a
blob store with its storage's; these commands say so instead."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

from app.store.database import DATABASE_NAME, StoreDamaged
from app.store.repository import Store


def backup(store: Store, dest: str | Path) -> int:
    """Copy the store to the folder ``dest`` while it runs: the database by SQLite's
    online backup, then every published result's files. Returns the number of results.
    Raises StoreDamaged when the database is damaged (a backup of it would be too)."""
    _embedded_only(store)
    dest = Path(dest)
    if (dest / DATABASE_NAME).exists():
        raise FileExistsError(f"{dest} already holds a backup")
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)
    if store.db.check() is not None:
        raise StoreDamaged(store.db.damaged)
    source, target = sqlite3.connect(store.db.path), sqlite3.connect(dest / DATABASE_NAME)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.chmod(dest / DATABASE_NAME, 0o600)
    ids = Store(dest).results.all_ids()
    for result_id in ids:  # files are written once before their row: all are there
        src = store.files.results_dir / result_id
        if src.is_dir():
            shutil.copytree(src, dest / "results" / result_id, dirs_exist_ok=True)
    return len(ids)


def _embedded_only(store: Store) -> None:
    if not store.db.is_sqlite or not hasattr(store.files, "tmp_dir"):
        raise ValueError(
            "pneumo backup and restore handle the embedded store (SQLite file "
            "and local folder); back up PostgreSQL with pg_dump and a blob store "
            "with its own tools (README, Scaling out)"
        )


def restore(backup: str | Path, data_dir: str | Path) -> int:
    """Replace the store in ``data_dir`` by the backup in ``backup`` (the service must be
    stopped). The damaged database is kept beside it as ``pneumo.sqlite3.damaged-<time>``.
    Returns the number of results restored. Raises StoreDamaged for a damaged backup."""
    source = Store(backup)
    if not source.db.exists or source.db.check() is not None:
        raise StoreDamaged(source.db.damaged or f"no database in {backup}")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (DATABASE_NAME, DATABASE_NAME + "-wal", DATABASE_NAME + "-shm"):
        if (data / name).exists():
            (data / name).rename(data / f"{name}.damaged-{stamp}")
    shutil.copy2(source.db.path, data / DATABASE_NAME)
    os.chmod(data / DATABASE_NAME, 0o600)
    shutil.copytree(source.files.results_dir, data / "results", dirs_exist_ok=True)
    restored = Store(data)
    restored.init()
    return len(restored.results.all_ids())
