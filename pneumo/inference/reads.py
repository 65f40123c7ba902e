"""Batch reads: files in, one :class:`Read` per file out, in input order.

:func:`read_batch` reads ``(key, file bytes)`` items (DICOM, PNG or JPEG, by the upload
reader :func:`pneumo.io.imaging.read_image`), gates them and puts the accepted ones
through the network together; :func:`read_items` does so batch after batch in this
process. ``pneumo predict`` and ``pneumo reread`` (through
:func:`pneumo.evaluation.engines.reread`), the Ray engine's actors and the device scripts
all read with :func:`read_batch`, so they give the same numbers.

A file that cannot be read, or that the chest gate refuses, gives a :class:`Read` with
``error`` set; the run goes on. Progress comes in as a callback, ``progress(read)``, once
per item: nothing here draws a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from pneumo.errors import NotChestXrayError, PneumoError, UnsupportedImageError
from pneumo.inference.predictor import Prediction, Predictor
from pneumo.inference.preprocess import model_image
from pneumo.io import rle
from pneumo.io.imaging import DEFAULT_MAX_PIXELS, ImageRecord, read_image

#: One input: a key of the caller's (a path, a result id) and the file's bytes, or a
#: :class:`~pneumo.errors.PneumoError` saying why the file could not be fetched.
Item = tuple[str, "bytes | PneumoError"]
#: Called once per item with its :class:`Read`, in input order.
Progress = Callable[["Read"], None]

#: The columns of a read, in order (a re-read CSV's, after ``read_at``): see :meth:`Read.to_dict`.
READ_FIELDS = (
    "key",
    "model",
    "model_version",
    "probability_kind",
    "source_format",
    "image_id",
    "rows",
    "columns",
    "probability",
    "positive",
    "threshold",
    "operating_point",
    "finding_below_threshold",
    "area_px",
    "area_cm2",
    "rle",
    "error",
    "error_code",
    "refused_by",
)


@dataclass(frozen=True, eq=False)
class Read:
    """One item read by a model: the model's :class:`Prediction`, or why there is none.

    ``key`` is the caller's; ``model``, ``model_version`` and ``probability_kind`` come
    from the card; ``source_format``, ``rows`` x ``columns`` and ``image_id`` (the DICOM
    SOPInstanceUID) from the file when it was read. When the model made no verdict,
    ``prediction`` is ``None``, ``error`` is the message for the person who sent the file,
    ``error_code`` the error's code (e.g. ``"corrupt_image"``, ``"not_chest_xray"``) and
    ``refused_by`` says where: ``"reader"``, ``"header"`` (the chest gate on the header
    or colour) or ``"appearance"`` (the card's gate).

    The verdict's columns (``probability`` ... ``rle``) are read from ``prediction``
    (``None`` without one): ``probability`` on the shown scale, ``positive`` at
    ``operating_point`` (its name) and ``threshold``, ``rle`` the outlined region as SIIM
    relative RLE at the image's size (``"-1"`` when empty).
    """

    key: str
    model: str
    model_version: str
    probability_kind: str
    source_format: str | None = None
    image_id: str | None = None
    rows: int | None = None
    columns: int | None = None
    prediction: Prediction | None = None
    error: str | None = None
    error_code: str | None = None
    refused_by: str | None = None

    @property
    def ok(self) -> bool:
        """The model made a verdict."""
        return self.error is None

    @property
    def probability(self) -> float | None:
        return None if self.prediction is None else self.prediction.probability

    @property
    def positive(self) -> bool | None:
        return None if self.prediction is None else bool(self.prediction.positive)

    @property
    def threshold(self) -> float | None:
        return None if self.prediction is None else self.prediction.threshold

    @property
    def operating_point(self) -> str | None:
        """The operating point's name."""
        return None if self.prediction is None else self.prediction.operating_point.name

    @property
    def finding_below_threshold(self) -> bool | None:
        return None if self.prediction is None else bool(self.prediction.finding_below_threshold)

    @property
    def area_px(self) -> int | None:
        return None if self.prediction is None else self.prediction.area_px

    @property
    def area_cm2(self) -> float | None:
        return None if self.prediction is None else self.prediction.area_cm2

    @property
    def rle(self) -> str | None:
        return None if self.prediction is None else rle.encode(self.prediction.mask)

    def to_dict(self) -> dict:
        """The read's :data:`READ_FIELDS` by name (plain values, no arrays)."""
        return {name: getattr(self, name) for name in READ_FIELDS}


def read_batch(
    predictor: Predictor,
    items: Sequence[Item],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> list[Read]:
    """Read, gate and predict one batch of items: one :class:`Read` per item, in order.

    The files the reader and the header gate accept go through the network together
    (one :meth:`Predictor.output` call). ``max_pixels``: the reader's cap on rows x
    columns per image; ``progress``: called with each read, in order, once the batch
    is done.
    """
    reads, accepted = _decode(predictor, items, max_pixels)
    if accepted:
        reads.update(_verdicts(predictor, items, accepted))
    done = [reads[i] for i in range(len(items))]
    if progress is not None:
        for read in done:
            progress(read)
    return done


def read_items(
    predictor: Predictor,
    items: Iterable[Item],
    batch_size: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> Iterator[Read]:
    """:func:`read_batch` on consecutive batches of ``batch_size`` items, drawn lazily:
    one :class:`Read` per item, in input order.

    Raises:
        ValueError: ``batch_size`` is not a whole number of at least 1 (at the call).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    return (
        read
        for chunk in batches(items, batch_size)
        for read in read_batch(predictor, chunk, max_pixels, progress)
    )


def file_items(paths: Iterable[str | Path]) -> Iterator[Item]:
    """``(str(path), bytes)`` for each file, read one at a time as the reader asks.

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
            data = UnsupportedImageError(
                f"{path.name} could not be opened ({exc.strerror or type(exc).__name__})."
            )
        yield str(path), data


def batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of ``size`` items (the last may be shorter), drawn lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _decode(
    predictor: Predictor, items: Sequence[Item], max_pixels: int
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


def _verdicts(
    predictor: Predictor, items: Sequence[Item], accepted: list[tuple[int, ImageRecord]]
) -> dict[int, Read]:
    """The network on the accepted records together, then each one's verdict or refusal."""
    out = predictor.output(np.stack([model_image(r.pixels, predictor.pcfg) for _, r in accepted]))
    reads: dict[int, Read] = {}
    for row, (index, record) in enumerate(accepted):
        key = items[index][0]
        try:
            predictor.check_appearance(out, row)
        except NotChestXrayError as exc:
            reads[index] = _refusal(predictor, key, record, exc, "appearance")
            continue
        reads[index] = Read(
            **_identity(predictor, key, record), prediction=predictor.finish(record, out, row)
        )
    return reads


def _identity(predictor: Predictor, key: str, record: ImageRecord | None) -> dict:
    card = predictor.card
    facts = dict(
        key=key, model=card.name, model_version=card.version, probability_kind=card.probability_kind
    )
    if record is not None:
        facts.update(
            source_format=record.meta.format,
            rows=int(record.pixels.shape[0]),
            columns=int(record.pixels.shape[1]),
            image_id=record.image_id if record.meta.format == "DICOM" else None,
        )
    return facts


def _refusal(
    predictor: Predictor, key: str, record: ImageRecord | None, exc: PneumoError, where: str
) -> Read:
    return Read(
        **_identity(predictor, key, record), error=str(exc), error_code=exc.code, refused_by=where
    )
