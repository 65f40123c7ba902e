"""The audit trail: who viewed, downloaded, sent, reviewed or deleted which result, when
and from where (append-only; purged after its own retention period)."""

from __future__ import annotations

import time

from app.store.database import Repository
from app.store.records import AuditEvent


class Audit(Repository):
    """Appending events and reading them back."""

    def record(
        self,
        actor: str,
        action: str,
        result_id: str | None = None,
        address: str | None = None,
        team_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Append one event to the audit trail."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO audit_events (at, actor, team_id, action, result_id, "
                "address, detail) VALUES (:at, :actor, :team, :action, :rid, :addr, "
                ":detail)",
                {
                    "at": time.time(),
                    "actor": actor,
                    "team": team_id,
                    "action": action,
                    "rid": result_id,
                    "addr": address,
                    "detail": detail,
                },
            )

    def viewed_since(self, actor: str, result_id: str, since: float) -> bool:
        """Whether ``actor`` viewed ``result_id`` (its page or its API answer) since
        ``since``."""
        with self._connect(write=False) as db:
            return (
                db.scalar(
                    "SELECT 1 FROM audit_events WHERE result_id = :rid AND at >= "
                    ":since AND actor = :actor AND action = 'view' LIMIT 1",
                    {"rid": result_id, "since": since, "actor": actor},
                )
                is not None
            )

    def events(
        self, since: float = 0.0, team_id: int | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        """Audit events since ``since`` (of one team's results, if given), oldest first."""
        where, args = "at >= :since", {"since": since}
        if team_id is not None:
            where += " AND team_id = :team"
            args["team"] = team_id
        tail = f" LIMIT {int(limit)}" if limit else ""
        with self._connect(write=False) as db:
            rows = db.all(f"SELECT * FROM audit_events WHERE {where} ORDER BY id{tail}", args)
        return [
            AuditEvent(
                r["id"],
                r["at"],
                r["actor"],
                r["team_id"],
                r["action"],
                r["result_id"],
                r["address"],
                r["detail"],
            )
            for r in rows
        ]

    def purge(self, older_than_days: float, now: float | None = None) -> int:
        """Delete audit events older than their own retention period; returns how many.
        The purge itself is an event (actor ``retention``, action ``purge-audit``, how
        many and the cut-off in its detail), so a gap in the trail always has a reason."""
        at = now or time.time()
        cutoff = at - older_than_days * 86400
        with self._connect() as db:
            n = db.execute("DELETE FROM audit_events WHERE at < :c", {"c": cutoff}).rowcount
            if n:
                db.execute(
                    "INSERT INTO audit_events (at, actor, action, detail) "
                    "VALUES (:at, 'retention', 'purge-audit', :detail)",
                    {
                        "at": time.time(),
                        "detail": f"{n} event(s) before "
                        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(cutoff))} deleted "
                        f"(retention {older_than_days:g} days)",
                    },
                )
            return n
