"""Rate-limit counters in the store, for Flask-Limiter (through the ``limits`` package's
storage interface): every worker and every machine on the same database counts together,
so a limit means what it says however many workers serve.

``RATELIMIT_STORAGE_URI = "pneumo-store://<data folder>?database=<database URL>"`` (the
app factory sets it from the store) selects this storage; the counters are fixed windows
kept in the store's ``rate_counters`` table (:class:`app.store.counters.Counters`), in the
SQLite file or the shared PostgreSQL database.

``limits`` makes the storage from the URI plus ``RATELIMIT_STORAGE_OPTIONS``: the app
factory passes the store's own counters there (``counters=``), so the limiter counts
through them (and the store's connection pool), not a second pool. Without that option
the URI's database is opened on its own (the same table, counted together).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

from limits.storage import Storage

from app.store.counters import Counters
from app.store.database import DATABASE_NAME, Database, StoreProblem, sqlite_url

if TYPE_CHECKING:
    from app.store.repository import Store

SCHEME = "pneumo-store"


def storage_uri(store: "Store") -> str:
    """The storage URI of ``store``'s counters (pass ``counters=store.counters`` in the
    storage options to count through the store's own pool)."""
    return f"{SCHEME}://{quote(str(store.root))}?database={quote(store.db.url, safe='')}"


class StoreCounters(Storage):
    """The ``limits`` storage interface over the store's counters (fixed windows)."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        counters: Counters | None = None,
        **options,
    ):
        parts = urlsplit(uri or "")
        database = parse_qs(parts.query).get("database", [None])[0] or sqlite_url(
            Path(unquote(parts.netloc + parts.path)) / DATABASE_NAME
        )
        self.counters = counters or Counters(Database(database))
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (StoreProblem, OSError)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.counters.hit(key, float(expiry), amount)

    def get(self, key: str) -> int:
        return self.counters.get(key)[0]

    def get_expiry(self, key: str) -> float:
        return self.counters.get(key)[1]  # (0, now) when no window runs

    def check(self) -> bool:
        try:
            self.counters.get("health")
        except (StoreProblem, OSError):
            return False
        return True

    def reset(self) -> int | None:
        self.counters.clear()
        return None

    def clear(self, key: str) -> None:
        self.counters.clear(key)
