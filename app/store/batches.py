"""Upload batches: several files sent at once, and the messages of the refused ones."""

from __future__ import annotations

import json
import time

from app.store.database import Repository
from app.store.records import Scope, valid_id


class Batches(Repository):
    """One row per batch; its results carry its id (:attr:`ResultRow.batch`)."""

    def add(self, batch_id: str, owner: str, files: int, errors: list[dict]) -> None:
        """Record an upload batch: how many files were sent and the refused ones' messages."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO batches (id, owner, created, files, errors) "
                "VALUES (:id, :owner, :created, :files, :errors)",
                {
                    "id": batch_id,
                    "owner": owner,
                    "created": time.time(),
                    "files": files,
                    "errors": json.dumps(errors),
                },
            )

    def set_errors(self, batch_id: str, errors: list[dict]) -> None:
        """Record the refused files' messages of a batch once all its files were tried."""
        with self._connect() as db:
            db.execute(
                "UPDATE batches SET errors = :errors WHERE id = :id",
                {"id": batch_id, "errors": json.dumps(errors)},
            )

    def get(self, batch_id: str, owner: "str | Scope") -> dict | None:
        """A batch ``owner`` uploaded (``id``, ``created``, ``files``, ``errors``), else
        ``None``."""
        r = valid_id(batch_id) and self._one(
            "SELECT * FROM batches WHERE id = :id AND owner = :owner",
            {"id": batch_id, "owner": Scope.of(owner).owner},
        )
        if not r:
            return None
        return {
            "id": r["id"],
            "created": r["created"],
            "files": r["files"],
            "errors": json.loads(r["errors"]),
        }
