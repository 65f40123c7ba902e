"""Reviews: a radiologist's verdict on a result (agrees with the model, or not and why,
with an optional corrected mask); one per result and reviewer."""

from __future__ import annotations

from typing import Mapping

from app.store.database import Repository
from app.store.records import ResultRow, Review, Scope
from app.store.rows import from_sql, visible


def _review(r: Mapping) -> Review:
    return Review(
        r["result_id"],
        r["reviewer"],
        r["reviewer_name"],
        r["created"],
        bool(r["agrees"]),
        r["reason"],
        r["corrected_rle"],
    )


class Reviews(Repository):
    """Keeping reviews, and the reviewed results (the running agreement, the export)."""

    def add(self, review: Review) -> None:
        """Keep a reviewer's verdict on a result (their later verdict replaces it)."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO reviews (result_id, reviewer, reviewer_name, created, agrees, "
                "reason, corrected_rle) VALUES (:r, :who, :name, :t, :a, :reason, :rle) "
                "ON CONFLICT (result_id, reviewer) DO UPDATE SET "
                "created = excluded.created, "
                "reviewer_name = excluded.reviewer_name, agrees = excluded.agrees, "
                "reason = excluded.reason, corrected_rle = excluded.corrected_rle",
                {
                    "r": review.result_id,
                    "who": review.reviewer,
                    "name": review.reviewer_name,
                    "t": review.created,
                    "a": int(review.agrees),
                    "reason": review.reason,
                    "rle": review.corrected_rle,
                },
            )

    def for_result(self, result_id: str) -> list[Review]:
        """Every reviewer's verdict on a result, newest first."""
        with self._connect(write=False) as db:
            rows = db.all(
                "SELECT * FROM reviews WHERE result_id = :r ORDER BY created DESC", {"r": result_id}
            )
        return [_review(r) for r in rows]

    def latest(self, result_ids: list[str]) -> dict[str, Review]:
        """The newest review of each of the results that have one."""
        if not result_ids:
            return {}
        names = {f"r{i}": rid for i, rid in enumerate(result_ids)}
        with self._connect(write=False) as db:
            rows = db.all(
                f"SELECT * FROM reviews WHERE result_id IN "
                f"({', '.join(':' + n for n in names)}) ORDER BY created",
                names,
            )
        return {r["result_id"]: _review(r) for r in rows}

    def reviewed(
        self, scope: "str | Scope | None", since: float = 0.0
    ) -> list[tuple[ResultRow, Review]]:
        """The results ``scope`` may read (``None``: every result, for the operator) that
        have a review since ``since``, each with its newest review (the running agreement
        and the export)."""
        where, args = visible(scope)
        with self._connect(write=False) as db:
            rows = db.all(
                f"SELECT * FROM results WHERE {where} AND id IN (SELECT result_id "
                f"FROM reviews WHERE created >= :since) ORDER BY created",
                {**args, "since": since},
            )
        results = [from_sql(r) for r in rows]
        latest = self.latest([r.id for r in results])
        return [(r, latest[r.id]) for r in results if r.id in latest]
