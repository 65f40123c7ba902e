"""Re-reads: other models' reads of stored studies (``pneumo reread``), kept beside the
first read (the result itself)."""

from __future__ import annotations

from app.store.database import Repository
from app.store.records import ReadRow


class Reads(Repository):
    """One row per study and model."""

    def add(self, read: ReadRow) -> None:
        """Keep one model's read of a stored study (a later read by the same model
        replaces it)."""
        values = {
            "result_id": read.result_id,
            "model": read.model,
            "created": read.created,
            "probability": read.probability,
            "positive": None if read.positive is None else int(read.positive),
            "threshold": read.threshold,
            "area_px": read.area_px,
            "rle": read.rle,
            "error": read.error,
        }
        with self._connect() as db:
            db.execute(
                "INSERT INTO reads (result_id, model, created, probability, positive, "
                "threshold, area_px, rle, error) VALUES (:result_id, :model, :created, "
                ":probability, :positive, :threshold, :area_px, :rle, :error) "
                "ON CONFLICT (result_id, model) DO UPDATE SET created = "
                "excluded.created, probability = excluded.probability, positive = "
                "excluded.positive, threshold = excluded.threshold, area_px = "
                "excluded.area_px, rle = excluded.rle, error = excluded.error",
                values,
            )

    def for_result(self, result_id: str) -> list[ReadRow]:
        """Every re-read of a result, oldest first."""
        with self._connect(write=False) as db:
            rows = db.all(
                "SELECT * FROM reads WHERE result_id = :id ORDER BY created", {"id": result_id}
            )
        return [
            ReadRow(
                r["result_id"],
                r["model"],
                r["created"],
                r["probability"],
                None if r["positive"] is None else bool(r["positive"]),
                r["threshold"],
                r["area_px"],
                r["rle"],
                r["error"],
            )
            for r in rows
        ]
