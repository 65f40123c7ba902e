"""Progress bars for the command-line tools: tqdm when installed (the ``train`` extra),
otherwise a line every 10 % on stderr, so the serving image needs no tqdm."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], desc: str, total: int | None = None,
          unit: str = "img") -> Iterable[T]:
    """Wrap ``items`` in a progress display."""
    try:
        from tqdm import tqdm  # lazy: the train extra's, absent from the serving image
    except ImportError:
        return _plain(items, desc, total if total is not None else _len(items), unit)
    return tqdm(items, desc=desc, total=total, unit=unit)


def _len(items) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


def _plain(items: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    step = max(1, (total or 0) // 10)
    done = 0
    for item in items:
        yield item
        done += 1
        if total and (done % step == 0 or done == total):
            print(f"{desc}: {done}/{total} {unit}", file=sys.stderr, flush=True)
