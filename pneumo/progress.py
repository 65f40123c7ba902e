"""Progress bars for the command-line tools: tqdm when installed (the ``train`` extra),
otherwise a line every 10 % on stderr, so the serving image needs no tqdm.

:func:`track` wraps an iterable; :func:`counter` gives a function to call once per item
done, for work that reports progress by callback (:mod:`pneumo.inference.reads`)."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "img"
) -> Iterable[T]:
    """Wrap ``items`` in a progress display."""
    try:
        from tqdm import tqdm  # lazy: the train extra's, absent from the serving image
    except ImportError:
        return _plain(items, desc, total if total is not None else _len(items), unit)
    return tqdm(items, desc=desc, total=total, unit=unit)


@contextlib.contextmanager
def counter(
    desc: str, total: int | None = None, unit: str = "img"
) -> Iterator[Callable[..., None]]:
    """A progress display advanced by one at each call of the function it yields (its
    arguments, e.g. the item done, are ignored); closed at the end of the block."""
    try:
        from tqdm import tqdm  # lazy: the train extra's, absent from the serving image
    except ImportError:
        yield _PlainCount(desc, total, unit)
        return
    bar = tqdm(desc=desc, total=total, unit=unit)
    try:
        yield lambda *_: bar.update(1)
    finally:
        bar.close()


def _len(items) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


class _PlainCount:
    """Counts calls; prints ``desc: done/total unit`` every 10 % of ``total`` on stderr."""

    def __init__(self, desc: str, total: int | None, unit: str):
        self.desc, self.total, self.unit = desc, total, unit
        self.step = max(1, (total or 0) // 10)
        self.done = 0

    def __call__(self, *_) -> None:
        self.done += 1
        if self.total and (self.done % self.step == 0 or self.done == self.total):
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}", file=sys.stderr, flush=True)


def _plain(items: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    count = _PlainCount(desc, total, unit)
    for item in items:
        yield item
        count()
