"""A result's files (the displayed X-ray, its probability map, the source DICOM and
what is rendered from them), kept in a folder per result.

:class:`LocalFiles` is the one implementation: a local or mounted folder. The
rest of the app sees only its methods, which take and give bytes (never
paths), so another backend (object storage, a shared file system through
fsspec) is one more class with the same methods, chosen in
:meth:`app.store.repository.Store.open`.

A result becomes visible only when its folder is complete: files are written
to ``tmp/<id>`` and renamed into ``results/<id>`` before the database row is
inserted, so a crash mid-request never leaves a half-written result. Folder
and file names are generated ids and fixed names, never client-supplied ones.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

#: Staged or orphaned folders younger than this may belong to a request in progress.
IN_PROGRESS_S = 3600.0


@dataclass(frozen=True)
class Staged:
    """The files of a result being written, not yet visible."""

    result_id: str
    folder: Path

    def put(self, name: str, data: bytes) -> None:
        """Write one file of the staged result."""
        (self.folder / _checked(name)).write_bytes(data)


def _checked(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"not a result file name: {name!r}")
    return name


class LocalFiles:
    """Result files under ``root``: ``results/<id>/<name>``, staged in ``tmp/<id>``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.results_dir = self.root / "results"
        self.tmp_dir = self.root / "tmp"

    def init(self) -> None:
        """Create the folders (the service's user only) and clear stale staged results
        of a crash."""
        for folder in (self.root, self.results_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)  # stored images and DICOMs: the service's user only
        for leftover in self.tmp_dir.iterdir():
            # another worker may be writing a fresh one right now
            if leftover.stat().st_mtime < time.time() - IN_PROGRESS_S:
                shutil.rmtree(leftover, ignore_errors=True)
        self.sweep_partial_files()

    def sweep_partial_files(self) -> int:
        """Remove half-written renders (``.<name>.<hex>.tmp``) a crash left in result
        folders; returns how many."""
        removed = 0
        for tmp in self.results_dir.glob("*/.*.tmp"):
            try:
                if tmp.stat().st_mtime < time.time() - IN_PROGRESS_S:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    # -- writing -------------------------------------------------------------

    def stage(self, result_id: str) -> Staged:
        """A fresh private folder where a result's files are written before commit."""
        folder = self.tmp_dir / result_id
        folder.mkdir(parents=True)
        return Staged(result_id, folder)

    def publish(self, staged: Staged) -> None:
        """Move a complete staged result into place (atomic on one file system)."""
        os.replace(staged.folder, self.results_dir / staged.result_id)

    def discard(self, staged: Staged) -> None:
        """Remove a staged result of a failed upload."""
        shutil.rmtree(staged.folder, ignore_errors=True)

    def add(self, result_id: str, name: str, data: bytes) -> bool:
        """Add a file to a published result (a rendered download), atomically: two
        requests rendering the same file each write a private temporary file and
        rename it into place, so a reader never sees half a file. ``False`` when
        the result is gone (deleted or purged meanwhile)."""
        folder = self.results_dir / result_id
        if not folder.is_dir():
            return False
        tmp = folder / f".{_checked(name)}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
        except FileNotFoundError:  # deleted while writing
            return False
        except OSError:  # a full disk: no half-written file stays behind
            tmp.unlink(missing_ok=True)
            raise
        return True

    # -- reading -------------------------------------------------------------

    def read(self, result_id: str, name: str) -> bytes | None:
        """One file of a result, or ``None`` when it does not exist."""
        try:
            return (self.results_dir / result_id / _checked(name)).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, result_id: str, name: str) -> bool:
        """True when the result has the file."""
        return (self.results_dir / result_id / _checked(name)).is_file()

    # -- removing ------------------------------------------------------------

    def delete(self, result_id: str) -> None:
        """Remove every file of a result."""
        shutil.rmtree(self.results_dir / result_id, ignore_errors=True)

    def remove_orphans(self, known: set[str]) -> int:
        """Remove result folders without a database row (a crash between publishing and
        inserting), except recent ones that may be mid-commit; returns how many."""
        removed = 0
        self.sweep_partial_files()
        for folder in self.results_dir.iterdir():
            recent = folder.stat().st_mtime > time.time() - IN_PROGRESS_S
            if folder.name not in known and not recent:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed
