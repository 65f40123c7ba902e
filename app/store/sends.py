"""PACS sends: a queue in the database, drained by PACS workers (one row per result
whose SEG is to be sent, with its state and back-off)."""

from __future__ import annotations

import time
from typing import Mapping

from app.store.database import Repository
from app.store.records import SendState

#: Longest wait between two tries of a failing PACS send.
MAX_BACKOFF_S = 3600.0


def _send_state(r: Mapping) -> SendState:
    return SendState(
        r["result_id"],
        r["state"],
        r["attempts"],
        r["last_error"],
        r["updated"],
        r["sent_at"],
        r["seg_sop_uid"],
        r["next_attempt"],
    )


class Sends(Repository):
    """Queueing, claiming and finishing sends; several workers may drain it at once."""

    def state(self, result_id: str) -> SendState | None:
        """The send state of a result's SEG, or ``None`` if it was never queued."""
        r = self._one("SELECT * FROM pacs_sends WHERE result_id = :id", {"id": result_id})
        return _send_state(r) if r else None

    def queue(self, result_id: str, owner: str) -> None:
        """Record that a result's SEG must be sent now (unless a sender holds it)."""
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO pacs_sends (result_id, owner, state, updated, next_attempt) "
                "VALUES (:id, :owner, 'queued', :now, :now) ON CONFLICT (result_id) "
                "DO UPDATE SET state = 'queued', updated = excluded.updated, "
                "next_attempt = excluded.next_attempt "
                "WHERE pacs_sends.state != 'sending'",
                {"id": result_id, "owner": owner, "now": now},
            )

    def claim(self, result_id: str, owner: str, stale_after_s: float) -> bool:
        """Mark one send as in progress; ``False`` if another thread or worker holds it
        (a claim older than ``stale_after_s`` died with its process and is taken over)."""
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO pacs_sends (result_id, owner, state, updated) "
                "VALUES (:id, :owner, 'sending', :now) ON CONFLICT (result_id) DO UPDATE SET "
                "state = 'sending', updated = excluded.updated "
                "WHERE pacs_sends.state != 'sending' OR pacs_sends.updated < :stale",
                {"id": result_id, "owner": owner, "now": now, "stale": now - stale_after_s},
            )
            return cur.rowcount == 1

    def claim_due(self, limit: int, stale_after_s: float) -> list[tuple[str, str]]:
        """Claim up to ``limit`` sends that are due (queued, failed and past their
        back-off, or claimed by a sender that died), oldest first, and return their
        ``(result_id, owner)``. Several PACS workers may call this at once: on PostgreSQL
        the rows are locked with ``FOR UPDATE SKIP LOCKED``, so no two claim the same send;
        on SQLite the transaction holds the file's write lock."""
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self._db.dialect == "postgresql" else ""
        with self._connect() as db:
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
            rows = db.all(
                "UPDATE pacs_sends SET state = 'sending', updated = :now WHERE result_id IN ("
                "SELECT result_id FROM pacs_sends WHERE (state IN ('queued', 'failed') AND "
                "COALESCE(next_attempt, 0) <= :now) OR (state = 'sending' AND updated < :stale) "
                f"ORDER BY updated LIMIT :limit{lock}) RETURNING result_id, owner",
                {"now": now, "stale": now - stale_after_s, "limit": limit},
            )
        return [(r["result_id"], r["owner"]) for r in rows]

    def finish(
        self, result_id: str, error: str | None, seg_uid: str | None, retry_after_s: float = 60.0
    ) -> None:
        """Record a send's outcome: sent (with the SEG's SOP Instance UID), or failed and
        due again after a back-off that doubles with each failure (``retry_after_s``
        first, at most :data:`MAX_BACKOFF_S`)."""
        now = time.time()
        with self._connect() as db:
            if error is None:
                db.execute(
                    "UPDATE pacs_sends SET state = 'sent', attempts = attempts + 1, "
                    "last_error = NULL, updated = :now, sent_at = :now, "
                    "seg_sop_uid = :uid, next_attempt = NULL WHERE result_id = :id",
                    {"now": now, "uid": seg_uid, "id": result_id},
                )
                return
            attempts = (
                int(
                    db.scalar(
                        "SELECT attempts FROM pacs_sends WHERE result_id = :id", {"id": result_id}
                    )
                    or 0
                )
                + 1
            )
            wait = min(retry_after_s * 2 ** min(attempts - 1, 16), MAX_BACKOFF_S)
            db.execute(
                "UPDATE pacs_sends SET state = 'failed', attempts = :n, "
                "last_error = :error, updated = :now, next_attempt = :next "
                "WHERE result_id = :id",
                {"n": attempts, "error": error, "now": now, "next": now + wait, "id": result_id},
            )

    def unfinished(self, stale_after_s: float, limit: int = 500) -> list[tuple[str, str]]:
        """``(result_id, owner)`` of sends not yet done (queued, failed, or claimed longer
        than ``stale_after_s`` ago), oldest first."""
        with self._connect(write=False) as db:
            db.execute("DELETE FROM pacs_sends WHERE result_id NOT IN (SELECT id FROM results)")
            rows = db.all(
                "SELECT result_id, owner FROM pacs_sends WHERE state IN ('queued', 'failed') "
                "OR (state = 'sending' AND updated < :stale) ORDER BY updated LIMIT :limit",
                {"stale": time.time() - stale_after_s, "limit": limit},
            )
        return [(r["result_id"], r["owner"]) for r in rows]
