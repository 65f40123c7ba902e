"""A result's files (the displayed X-ray, its probability map, the source DICOM and
what is rendered from them), kept in a folder per result.

:class:`LocalFiles` is the one implementation: a local or mounted folder. The
rest of the app sees only its methods, which take and give bytes (never
paths), so another backend (object storage, a shared file system through
fsspec) is one more class with the same methods, chosen in
:func:`open_files` (the store's ``files``).

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
from typing import Callable
from urllib.parse import urlsplit

import fsspec

#: Staged or orphaned folders younger than this may belong to a request in progress.
IN_PROGRESS_S = 3600.0


@dataclass(frozen=True)
class Staged:
    """The files of a result being written, not yet visible."""

    result_id: str
    folder: str
    write: Callable[[str, bytes], None]

    def put(self, name: str, data: bytes) -> None:
        """Write one file of the staged result."""
        self.write(_checked(name), data)


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
        return Staged(result_id, str(folder), lambda name, data: (folder / name).write_bytes(data))

    def publish(self, staged: Staged) -> None:
        """Move a complete staged result into place (atomic on one file system)."""
        os.replace(staged.folder, self.results_dir / staged.result_id)

    def discard(self, staged: Staged) -> None:
        """Remove a staged result of a failed upload."""
        shutil.rmtree(staged.folder, ignore_errors=True)

    def free_bytes(self) -> int:
        """Free space on the disk under the files."""
        return shutil.disk_usage(self.root).free

    def check(self) -> str | None:
        """``None`` when the folder is there and ours to read and write now, else why not
        (``/readyz``, every few seconds: a stat, never a listing of every result)."""
        try:
            os.stat(self.results_dir)
        except OSError as exc:
            return f"the results folder cannot be read ({exc.strerror})"
        if not os.access(self.results_dir, os.R_OK | os.W_OK | os.X_OK):
            return "the results folder cannot be read and written by the service's user"
        return None

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


class BlobFiles:
    """Result files in an fsspec file system (object storage): ``<url>/results/<id>/<name>``.

    There is no rename on object storage, so a result's files are written in place and
    become visible with their database row (written after them); files of a result that
    never got its row are swept by :meth:`remove_orphans`.
    """

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.results_dir = f"{self.root}/results"
        self._marker = f"{self.root}/.pneumo-store"

    def _path(self, result_id: str, name: str | None = None) -> str:
        folder = f"{self.results_dir}/{result_id}"
        return folder if name is None else f"{folder}/{_checked(name)}"

    def init(self) -> None:
        """Make the results prefix (a no-op on stores without folders) and the marker
        object :meth:`check` reads."""
        self.fs.makedirs(self.results_dir, exist_ok=True)
        self.fs.pipe_file(self._marker, b"pneumo result files\n")

    def sweep_partial_files(self) -> int:
        """Object stores write whole objects: nothing half-written to sweep."""
        return 0

    def stage(self, result_id: str) -> Staged:
        """Files of a new result, written in place (invisible until its row exists)."""
        return Staged(
            result_id,
            self._path(result_id),
            lambda name, data: self.fs.pipe_file(self._path(result_id, name), data),
        )

    def publish(self, staged: Staged) -> None:
        """Nothing to move: the row, inserted next, makes the result visible."""

    def discard(self, staged: Staged) -> None:
        """Remove the files of a failed upload."""
        self.delete(staged.result_id)

    def add(self, result_id: str, name: str, data: bytes) -> bool:
        """Add a rendered file to a result (an object is written whole); ``False`` when
        the result is gone."""
        if not self.fs.exists(self._path(result_id)):
            return False
        self.fs.pipe_file(self._path(result_id, name), data)
        return True

    def read(self, result_id: str, name: str) -> bytes | None:
        """One file of a result, or ``None`` when it does not exist."""
        try:
            return self.fs.cat_file(self._path(result_id, name))
        except FileNotFoundError:
            return None

    def exists(self, result_id: str, name: str) -> bool:
        """True when the result has the file."""
        return self.fs.exists(self._path(result_id, name))

    def delete(self, result_id: str) -> None:
        """Remove every file of a result."""
        try:
            self.fs.rm(self._path(result_id), recursive=True)
        except FileNotFoundError:
            pass

    def remove_orphans(self, known: set[str]) -> int:
        """Remove results' files without a database row, except recent ones that may be
        mid-upload; returns how many results."""
        removed = 0
        for entry in self.fs.ls(self.results_dir, detail=True):
            result_id = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if result_id in known or self._recent(result_id):
                continue
            self.delete(result_id)
            removed += 1
        return removed

    def _recent(self, result_id: str) -> bool:
        newest = 0.0
        for info in self.fs.ls(self._path(result_id), detail=True):
            stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
            if hasattr(stamp, "timestamp"):
                stamp = stamp.timestamp()
            newest = max(newest, float(stamp or 0))
        return newest > time.time() - IN_PROGRESS_S

    def free_bytes(self) -> None:
        """Object storage has no disk to measure."""
        return None

    def check(self) -> str | None:
        """``None`` when the store answers now, else why not (``/readyz``, every few
        seconds: one small read of the marker :meth:`init` writes, never a listing of
        every result; fsspec's ``exists`` would say False for an unreachable store)."""
        try:
            self.fs.cat_file(self._marker)
        except Exception as exc:  # noqa: BLE001 - any backend's failure is reported
            return f"the blob store cannot be read ({type(exc).__name__})"
        return None


def open_files(url: str) -> LocalFiles | BlobFiles:
    """The file store of ``PNEUMO_BLOB_URL``: a plain path or ``file://`` URL is a
    folder (:class:`LocalFiles`), any other fsspec URL object storage."""
    parts = urlsplit(url)
    if len(parts.scheme) <= 1:  # a path (or a Windows drive letter)
        return LocalFiles(url)
    if parts.scheme == "file":
        return LocalFiles(parts.path)
    return BlobFiles(url)
