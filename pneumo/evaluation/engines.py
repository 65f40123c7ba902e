"""Prediction engines: files in, one :class:`Read` per file out, in input order.

:func:`reread` reads ``(key, file bytes)`` items (DICOM, PNG or JPEG, read by the
upload reader, :func:`pneumo.io.imaging.read_image`) with a model folder and
yields what the model says about each. Two engines run the same step,
:func:`read_batch`, on the same batches of ``batch_size`` items, so they give the
same numbers (a test holds probabilities within 1e-6, verdicts and masks equal):

* ``local``: one :class:`~pneumo.inference.predictor.Predictor` in this process
  (the reference; what ``pneumo predict`` runs by default);
* ``ray``: Predictors as Ray actors (:mod:`pneumo.evaluation.ray_engine`), one per
  GPU where the cluster has GPUs, else one per ``cores_per_actor`` CPU cores.

A file that cannot be read, or that the chest gate refuses, gives a :class:`Read`
with ``error`` set; the run goes on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import islice
from pathlib import Path

import numpy as np

from pneumo.errors import NotChestXrayError, PneumoError, UnsupportedImageError
from pneumo.inference.device import DEFAULT_DEVICE, configure_device
from pneumo.inference.predictor import DEFAULT_MODEL_DIR, Predictor
from pneumo.inference.preprocess import model_image
from pneumo.inference.runtime import DEFAULT_RUNTIME
from pneumo.io import rle
from pneumo.io.imaging import DEFAULT_MAX_PIXELS, ImageRecord, read_image
from pneumo.progress import track

#: The engines :func:`reread` knows.
ENGINES = ("local", "ray")

#: One input: a key of the caller's (a path, a result id) and the file's bytes, or a
#: :class:`~pneumo.errors.PneumoError` saying why the file could not be fetched.
Item = tuple[str, "bytes | PneumoError"]


@dataclass(frozen=True)
class LoadOptions:
    """How each engine loads its Predictor: ``pneumo predict``'s model options.

    ``device``: ``auto``, ``cpu`` or ``gpu``; ``runtime``: ``keras`` or ``openvino``;
    ``operating_point``: one of the card's points (``None``: the card's);
    ``tta``: flip test-time augmentation (``None``: the card's); ``prevalence``: the
    site prevalence the shown probability is re-based to (``None``: none).
    """

    device: str = DEFAULT_DEVICE
    runtime: str = DEFAULT_RUNTIME
    operating_point: str | None = None
    tta: bool | None = None
    prevalence: float | None = None


@dataclass(frozen=True)
class Read:
    """What the model said about one item (or why it said nothing).

    When ``error`` is ``None``: ``probability`` is the card's image-level number on the
    shown scale (``probability_kind``: ``"probability"`` or ``"score"``), ``positive``
    is ``probability >= threshold`` at ``operating_point``, ``rle`` is the outlined
    region as SIIM relative RLE at the image's ``rows`` x ``columns`` (``"-1"`` when
    empty), ``area_cm2`` is ``None`` without a plausible pixel spacing. Otherwise the
    verdict fields are ``None``, ``error`` is the message for the person who sent the
    file, ``error_code`` the error's code (e.g. ``"corrupt_image"``,
    ``"not_chest_xray"``) and ``refused_by`` says where: ``"reader"``, ``"header"``
    (the chest gate on the header or colour) or ``"appearance"`` (the card's gate).
    ``image_id`` is the DICOM SOPInstanceUID, when the file was read and had one.
    """

    key: str
    model: str
    model_version: str
    probability_kind: str
    source_format: str | None = None
    image_id: str | None = None
    rows: int | None = None
    columns: int | None = None
    probability: float | None = None
    positive: bool | None = None
    threshold: float | None = None
    operating_point: str | None = None
    finding_below_threshold: bool | None = None
    area_px: int | None = None
    area_cm2: float | None = None
    rle: str | None = None
    error: str | None = None
    error_code: str | None = None
    refused_by: str | None = None

    @property
    def ok(self) -> bool:
        """The model made a verdict."""
        return self.error is None


#: The fields of a :class:`Read`, in order: the columns of a re-read CSV.
READ_FIELDS = tuple(f.name for f in fields(Read))


def read_batch(predictor: Predictor, items: Sequence[Item],
               max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Read]:
    """Read, gate and predict one batch of items: one :class:`Read` per item, in order.

    The files the reader and the header gate accept go through the network together
    (one :meth:`Predictor.output` call), as ``pneumo predict`` batches them.
    """
    reads, accepted = _decode(predictor, items, max_pixels)
    if accepted:
        reads.update(_verdicts(predictor, items, accepted))
    return [reads[i] for i in range(len(items))]


def _decode(predictor: Predictor, items: Sequence[Item], max_pixels: int
            ) -> tuple[dict[int, Read], list[tuple[int, ImageRecord]]]:
    """Refusals by item index, and the decoded records the header gate lets through."""
    refused: dict[int, Read] = {}
    accepted: list[tuple[int, ImageRecord]] = []
    for index, (key, data) in enumerate(items):
        try:
            if isinstance(data, PneumoError):
                raise data
            record = read_image(data, max_pixels=max_pixels)
        except PneumoError as exc:
            refused[index] = _refusal(predictor, key, None, exc, "reader")
            continue
        try:
            predictor.check_header(record)
        except NotChestXrayError as exc:
            refused[index] = _refusal(predictor, key, record, exc, "header")
            continue
        accepted.append((index, record))
    return refused, accepted


def _verdicts(predictor: Predictor, items: Sequence[Item],
              accepted: list[tuple[int, ImageRecord]]) -> dict[int, Read]:
    """The network on the accepted records together, then each one's verdict or refusal."""
    out = predictor.output(np.stack([model_image(r.pixels, predictor.pcfg)
                                     for _, r in accepted]))
    reads: dict[int, Read] = {}
    for row, (index, record) in enumerate(accepted):
        key = items[index][0]
        try:
            predictor.check_appearance(out, row)
        except NotChestXrayError as exc:
            reads[index] = _refusal(predictor, key, record, exc, "appearance")
            continue
        pred = predictor.finish(record, out, row)
        reads[index] = Read(
            **_identity(predictor, key, record), probability=pred.probability,
            positive=bool(pred.positive), threshold=pred.threshold,
            operating_point=pred.operating_point.name,
            finding_below_threshold=bool(pred.finding_below_threshold),
            area_px=pred.area_px, area_cm2=pred.area_cm2, rle=rle.encode(pred.mask))
    return reads


def _identity(predictor: Predictor, key: str, record: ImageRecord | None) -> dict:
    card = predictor.card
    facts = dict(key=key, model=card.name, model_version=card.version,
                 probability_kind=card.probability_kind)
    if record is not None:
        facts.update(source_format=record.meta.format, rows=int(record.pixels.shape[0]),
                     columns=int(record.pixels.shape[1]),
                     image_id=record.image_id if record.meta.format == "DICOM" else None)
    return facts


def _refusal(predictor: Predictor, key: str, record: ImageRecord | None, exc: PneumoError,
             where: str) -> Read:
    return Read(**_identity(predictor, key, record), error=str(exc), error_code=exc.code,
                refused_by=where)


def load_predictor(model_dir: str | Path, options: LoadOptions = LoadOptions(),
                   threads: int | None = None) -> Predictor:
    """Place the model (:func:`~pneumo.inference.device.configure_device`) and load it.

    ``threads``: CPU threads per operation (``None``: one per core).
    """
    placement = configure_device(threads, options.device)
    return Predictor.load(model_dir, operating_point=options.operating_point,
                          runtime=options.runtime, tta=options.tta,
                          prevalence=options.prevalence, placement=placement)


def file_items(paths: Iterable[str | Path]) -> Iterator[Item]:
    """``(str(path), bytes)`` for each file, read one at a time as the engine asks.

    A file that cannot be opened gives a :class:`~pneumo.errors.UnsupportedImageError`
    in place of its bytes (its :class:`Read` then carries the message).
    """
    for path in paths:
        path = Path(path)
        try:
            data: bytes | PneumoError = path.read_bytes()
        except FileNotFoundError:
            data = UnsupportedImageError(f"No such file: {path.name}")
        except IsADirectoryError:
            data = UnsupportedImageError(f"{path.name} is a folder, not an image")
        except OSError as exc:
            data = UnsupportedImageError(f"{path.name} could not be opened "
                                         f"({exc.strerror or type(exc).__name__}).")
        yield str(path), data


def batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of ``size`` items (the last may be shorter), drawn lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def reread(model: str | Path | Predictor | None, items: Iterable[Item], *,
           engine: str = "local", batch_size: int = 4, options: LoadOptions = LoadOptions(),
           address: str | None = None, cores_per_actor: int = 2,
           max_pixels: int = DEFAULT_MAX_PIXELS, total: int | None = None,
           progress: str | None = None,
           on_ready: Callable[[str], None] | None = None) -> Iterator[Read]:
    """Predict every item with a model folder: one :class:`Read` per item, in input order.

    Args:
        model: the model folder (``None``: the bundled model). The ``ray`` engine's
            workers load it from this path, so on a cluster it must be readable at the
            same path on every node (a shared mount, or the same checkout). The
            ``local`` engine also takes an already loaded :class:`Predictor`.
        items: ``(key, file bytes)`` pairs, drawn lazily (at most a few batches per
            actor are held at once); see :data:`Item`.
        engine: ``"local"`` (this process) or ``"ray"``.
        batch_size: files per network call (both engines batch alike).
        options: how each Predictor is loaded (ignored for a loaded Predictor).
        address: the ``ray`` engine's cluster (``"auto"``, ``"host:6379"``,
            ``"ray://host:10001"``); ``None``: the Ray this process already runs, else a
            local Ray on this machine's cores, shut down at the end.
        cores_per_actor: CPU cores per actor on a cluster without GPUs.
        max_pixels: the reader's cap on rows x columns per image.
        total: the number of items, for the progress display, when known.
        progress: a label for a progress display on stderr (``None``: none).
        on_ready: called once the model is loaded, with where it runs (e.g.
            ``"CPU (tensorflow), runtime keras"``, ``"4 Ray actors: GPU 0: ..."``).

    Raises:
        ValueError: an unknown engine or an impossible argument, before any work.
        ModelLoadError: the model could not be loaded (by a Ray worker: its message).

    The arguments are checked at the call; the work starts at the first ``next()``.
    The iterator holds a Ray connection while it runs: consume it to the end, or
    ``close()`` it, to shut down a Ray it started.
    """
    _check_arguments(model, engine, batch_size, address, cores_per_actor)
    return _reread(model, items, engine, batch_size, options, address, cores_per_actor,
                   max_pixels, total, progress, on_ready)


def _reread(model, items, engine, batch_size, options, address, cores_per_actor, max_pixels,
            total, progress, on_ready) -> Iterator[Read]:
    chunks = batches(items, batch_size)
    if engine == "local":
        predictor = model if isinstance(model, Predictor) else \
            load_predictor(model or DEFAULT_MODEL_DIR, options)
        if on_ready:
            on_ready(f"{predictor.device}, runtime {predictor.runtime.name}")
        results: Iterator[list[Read]] = (read_batch(predictor, chunk, max_pixels)
                                         for chunk in chunks)
    else:
        from pneumo.evaluation.ray_engine import ray_reads  # Ray only when asked for
        results = ray_reads(Path(model or DEFAULT_MODEL_DIR).resolve(), chunks, options,
                            address=address, cores_per_actor=cores_per_actor,
                            max_pixels=max_pixels, on_ready=on_ready)
    shown = track(results, progress, unit="batch",
                  total=None if total is None else -(-total // batch_size)) \
        if progress else results
    try:
        for reads in shown:
            yield from reads
    finally:
        results.close()  # at once, not when collected: shuts down a Ray it started


def _check_arguments(model, engine: str, batch_size: int, address: str | None,
                     cores_per_actor: int) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for name, value in (("batch_size", batch_size), ("cores_per_actor", cores_per_actor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if engine != "ray" and address is not None:
        raise ValueError(f"a Ray address ({address!r}) needs engine='ray'")
    if engine == "ray" and isinstance(model, Predictor):
        raise ValueError("the ray engine loads the model on its workers: pass the model "
                         "folder, not a loaded Predictor")
