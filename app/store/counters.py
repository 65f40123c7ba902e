"""Rate-limit counters, shared by every worker and machine on the same database
(fixed windows; the limiter reaches them through :mod:`app.store.ratelimits`)."""

from __future__ import annotations

import time

from app.store.database import Repository


class Counters(Repository):
    """Named counters, each over a fixed window of time."""

    def hit(self, key: str, window_s: float, amount: int = 1) -> int:
        """Add ``amount`` to the counter ``key`` of a fixed window of ``window_s`` seconds
        (a new window when the last one ended); returns the count in this window."""
        now = time.time()
        with self._connect() as db:
            return int(
                db.scalar(
                    "INSERT INTO rate_counters (key, count, expires) VALUES (:k, :n, :end) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "count = CASE WHEN rate_counters.expires <= :now THEN excluded.count "
                    "ELSE rate_counters.count + excluded.count END, "
                    "expires = CASE WHEN rate_counters.expires <= :now THEN excluded.expires "
                    "ELSE rate_counters.expires END RETURNING count",
                    {"k": key, "n": amount, "end": now + window_s, "now": now},
                )
            )

    def get(self, key: str) -> tuple[int, float]:
        """``(count, end of window)`` of a counter; ``(0, now)`` when none is running."""
        now = time.time()
        row = self._one(
            "SELECT count, expires FROM rate_counters WHERE key = :k AND expires > :now",
            {"k": key, "now": now},
        )
        return (int(row["count"]), float(row["expires"])) if row else (0, now)

    def clear(self, key: str | None = None) -> None:
        """Forget one counter, or every one (``None``) and the ended ones in any case."""
        with self._connect() as db:
            if key is None:
                db.execute("DELETE FROM rate_counters")
            else:
                db.execute(
                    "DELETE FROM rate_counters WHERE key = :k OR expires <= :now",
                    {"k": key, "now": time.time()},
                )
