"""Rate-limit counters in the store, for Flask-Limiter (through the ``limits`` package's
storage interface): every worker and every machine on the same database counts together,
so a limit means what it says however many workers serve.

``RATELIMIT_STORAGE_URI = "pneumo-store://<data folder>?database=<database URL>"`` (the
app factory sets it from the store) selects this storage; the counters are fixed windows
kept in the store's ``rate_counters`` table (:meth:`app.store.repository.Store.count_hit`),
in the SQLite file or the shared PostgreSQL database.
"""
from __future__ import annotations

import weakref
from urllib.parse import parse_qs, quote, unquote, urlsplit

from limits.storage import Storage

from app.store.database import StoreProblem
from app.store.repository import Store

SCHEME = "pneumo-store"

#: The stores the app factory made in this process, by database URL: the limiter counts
#: through the app's own store (and its connection pool) rather than a second one.
_STORES: "weakref.WeakValueDictionary[str, Store]" = weakref.WeakValueDictionary()


def storage_uri(store: Store) -> str:
    """The storage URI of ``store``'s counters (the store is shared with the limiter)."""
    _STORES[store.url] = store
    return f"{SCHEME}://{quote(str(store.root))}?database={quote(store.url, safe='')}"


class StoreCounters(Storage):
    """The ``limits`` storage interface over the store's counters (fixed windows)."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        parts = urlsplit(uri or "")
        database = parse_qs(parts.query).get("database", [None])[0]
        self.store = _STORES.get(database) or Store(unquote(parts.netloc + parts.path), database)
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (StoreProblem, OSError)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.store.count_hit(key, float(expiry), amount)

    def get(self, key: str) -> int:
        return self.store.counter(key)[0]

    def get_expiry(self, key: str) -> float:
        return self.store.counter(key)[1]  # (0, now) when no window runs

    def check(self) -> bool:
        try:
            self.store.counter("health")
        except (StoreProblem, OSError):
            return False
        return True

    def reset(self) -> int | None:
        self.store.clear_counters()
        return None

    def clear(self, key: str) -> None:
        self.store.clear_counters(key)
