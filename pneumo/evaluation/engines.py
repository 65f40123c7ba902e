"""Prediction engines: files in, one :class:`~pneumo.inference.reads.Read` per file out,
in input order.

:func:`reread` reads ``(key, file bytes)`` items with a model and yields what the model
says about each. Two engines run the same step,
:func:`~pneumo.inference.reads.read_batch`, on the same batches of ``batch_size`` items,
so they give the same numbers (a test holds probabilities within 1e-6, verdicts and
masks equal):

* ``local``: one :class:`~pneumo.inference.predictor.Predictor` in this process
  (:func:`~pneumo.inference.reads.read_items`; the reference, what ``pneumo predict``
  runs by default);
* ``ray``: Predictors as Ray actors (:mod:`pneumo.evaluation.ray_engine`), one per
  GPU where the cluster has GPUs, else one per ``cores_per_actor`` CPU cores.

A file that cannot be read, or that the chest gate refuses, gives a read with ``error``
set; the run goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from pneumo.evaluation.ray_engine import ray_reads
from pneumo.inference.loading import ModelOptions, load_predictor
from pneumo.inference.predictor import Predictor
from pneumo.inference.reads import Item, Progress, Read, batches, read_items
from pneumo.io.imaging import DEFAULT_MAX_PIXELS
from pneumo.progress import counter

#: The engines :func:`reread` knows.
ENGINES = ("local", "ray")


def reread(
    model: Predictor | ModelOptions | None,
    items: Iterable[Item],
    *,
    engine: str = "local",
    batch_size: int = 4,
    address: str | None = None,
    cores_per_actor: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    total: int | None = None,
    progress: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> Iterator[Read]:
    """Predict every item with a model: one read per item, in input order.

    Args:
        model: how to load the model (:class:`ModelOptions`; ``None``: the bundled model
            with the default options). The ``ray`` engine's workers load its folder by
            its path, so on a cluster it must be readable at the same path on every node
            (a shared mount, or the same checkout). The ``local`` engine also takes an
            already loaded :class:`Predictor`.
        items: ``(key, file bytes)`` pairs, drawn lazily (at most a few batches per
            actor are held at once); see :data:`~pneumo.inference.reads.Item`.
        engine: ``"local"`` (this process) or ``"ray"``.
        batch_size: files per network call (both engines batch alike).
        address: the ``ray`` engine's cluster (``"auto"``, ``"host:6379"``,
            ``"ray://host:10001"``); ``None``: the Ray this process already runs, else a
            local Ray on this machine's cores, shut down at the end.
        cores_per_actor: CPU cores per actor on a cluster without GPUs.
        max_pixels: the reader's cap on rows x columns per image.
        total: the number of items, for the progress display, when known.
        progress: a label for a progress display on stderr, one step per file
            (``None``: none).
        on_ready: called once the model is loaded, with where it runs (e.g.
            ``"CPU (tensorflow), runtime keras (tensorflow)"``, ``"4 Ray actors: ..."``).

    Raises:
        ValueError: an unknown engine or an impossible argument, before any work.
        ModelLoadError: the model could not be loaded (by a Ray worker: its message).

    The arguments are checked at the call; the work starts at the first ``next()``.
    The iterator holds a Ray connection while it runs: consume it to the end, or
    ``close()`` it, to shut down a Ray it started.
    """
    _check_arguments(model, engine, batch_size, address, cores_per_actor)
    return _reread(
        model or ModelOptions(),
        items,
        engine,
        batch_size,
        address,
        cores_per_actor,
        max_pixels,
        total,
        progress,
        on_ready,
    )


def _reread(
    model,
    items,
    engine,
    batch_size,
    address,
    cores_per_actor,
    max_pixels,
    total,
    progress,
    on_ready,
) -> Iterator[Read]:
    if engine == "local":
        predictor = model if isinstance(model, Predictor) else load_predictor(model)
        if on_ready:
            on_ready(predictor.where)
    with _display(progress, total) as advance:
        if engine == "local":
            reads = read_items(predictor, items, batch_size, max_pixels, progress=advance)
        else:
            reads = _flat(
                ray_reads(
                    model,
                    batches(items, batch_size),
                    address=address,
                    cores_per_actor=cores_per_actor,
                    max_pixels=max_pixels,
                    on_ready=on_ready,
                ),
                advance,
            )
        try:
            yield from reads
        finally:
            reads.close()  # at once, not when collected: shuts down a Ray it started


def _display(label: str | None, total: int | None):
    """A progress display (its step function), or ``None`` without a label."""
    return counter(label, total, unit="img") if label else contextlib.nullcontext()


def _flat(results: Iterator[list[Read]], progress: Progress | None) -> Iterator[Read]:
    """Batches of reads as one read after another, each reported to ``progress``."""
    try:
        for chunk in results:
            for read in chunk:
                if progress is not None:
                    progress(read)
                yield read
    finally:
        results.close()


def _check_arguments(
    model, engine: str, batch_size: int, address: str | None, cores_per_actor: int
) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for name, value in (("batch_size", batch_size), ("cores_per_actor", cores_per_actor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if engine != "ray" and address is not None:
        raise ValueError(f"a Ray address ({address!r}) needs engine='ray'")
    if engine == "ray" and isinstance(model, Predictor):
        raise ValueError(
            "the ray engine loads the model on its workers: pass its "
            "ModelOptions, not a loaded Predictor"
        )
