"""Batch prediction of image files to a Kaggle submission CSV, scores and overlays."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from pneumo.data import dataset
from pneumo.evaluation.engines import reread
from pneumo.inference import overlay
from pneumo.inference.card import read_card
from pneumo.inference.loading import ModelOptions
from pneumo.inference.predictor import Predictor
from pneumo.inference.reads import READ_FIELDS, Read, file_items
from pneumo.io.imaging import read_image


def predict_files(
    model: Predictor | ModelOptions | None,
    inputs: list[str],
    submission: str | Path,
    scores_csv: str | Path | None = None,
    overlays: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
    **engine,
) -> dict:
    """Batch prediction to a Kaggle submission CSV (+ scores CSV, overlay PNGs).

    ``model``: a loaded :class:`Predictor` (the ``local`` engine), or how to load one
    (:class:`ModelOptions`; ``None``: the bundled model) for the engine chosen by
    ``engine``'s keywords (``engine``, ``address``, ``cores_per_actor``, ``on_ready``: see
    :func:`pneumo.evaluation.engines.reread`; every engine writes the same files).

    Returns counts: ``{"images": n, "positive": k, "failed": f, "not_chest": g}``
    and ``"skipped"``: one line per file that could not be read or that the chest
    gate refused (left out of the CSVs), for the caller to print after the
    progress bar.
    """
    files = dataset.iter_image_files(inputs)
    card = (
        model.card
        if isinstance(model, Predictor)
        else read_card((model or ModelOptions()).model_dir)
    )
    reads = reread(
        model,
        file_items(files),
        batch_size=batch_size,
        total=len(files),
        progress="predicting" if progress else None,
        **engine,
    )
    if overlays:
        Path(overlays).mkdir(parents=True, exist_ok=True)
    sub_fh = open(submission, "w", newline="")
    sub = csv.writer(sub_fh)
    sub.writerow(["ImageId", "EncodedPixels"])
    sc_fh = open(scores_csv, "w", newline="") if scores_csv else None
    sc = csv.writer(sc_fh) if sc_fh else None
    if sc:
        sc.writerow(["ImageId", card.probability_kind, "area_px", "threshold", "operating_point"])
    counts = {"images": 0, "positive": 0, "failed": 0, "not_chest": 0}
    skipped: list[str] = []
    try:
        for read in reads:
            path = Path(read.key)
            image_id = read.image_id or path.stem
            if not read.ok:
                counts["failed" if read.refused_by == "reader" else "not_chest"] += 1
                named = image_id if read.refused_by == "appearance" else path.name
                skipped.append(f"skipped {named}: {read.error}")
                continue
            sub.writerow([image_id, read.rle])
            if sc:
                sc.writerow(
                    [
                        image_id,
                        f"{read.probability:.4f}",
                        read.area_px,
                        f"{read.threshold:.4f}",
                        read.operating_point,
                    ]
                )
            if overlays:
                _write_overlay(path, read, Path(overlays) / f"{_safe_name(image_id)}.png")
            counts["images"] += 1
            counts["positive"] += int(read.positive)
    finally:
        reads.close()
        sub_fh.close()
        if sc_fh:
            sc_fh.close()
    return dict(counts, skipped=skipped)


def _write_overlay(path: Path, read: Read, out: Path) -> None:
    """The outlined region over the film (decoded again here: a read carries no pixels)."""
    pixels = read_image(path).pixels
    Image.fromarray(overlay.filled(pixels, read.prediction.mask)).save(out)


#: The columns of a re-read CSV: when the run began (UTC), then a read's fields.
READ_COLUMNS = ("read_at",) + READ_FIELDS


def write_reads(reads: Iterable[Read], out: str | Path, append: bool = False) -> dict:
    """Reads to a CSV (:data:`READ_COLUMNS`): one row per file, the model's name and
    version on each, ``read_at`` the run's start in UTC; an error row for a file
    with no verdict.

    ``append``: add the rows to ``out`` if it exists (it must have the same columns),
    so a new model's reads sit beside earlier ones. Returns counts as
    :func:`predict_files` does (``images``, ``positive``, ``failed``, ``not_chest``).
    """
    out = Path(out)
    adding = append and out.exists() and out.stat().st_size > 0
    if adding:
        with open(out, newline="") as fh:
            header = tuple(next(csv.reader(fh), ()))
        if header != READ_COLUMNS:
            raise ValueError(
                f"{out} has other columns than a re-read CSV; write to a new file instead"
            )
    read_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    counts = {"images": 0, "positive": 0, "failed": 0, "not_chest": 0}
    with open(out, "a" if adding else "w", newline="") as fh:
        writer = csv.writer(fh)
        if not adding:
            writer.writerow(READ_COLUMNS)
        for read in reads:
            writer.writerow([read_at] + [_cell(value) for value in read.to_dict().values()])
            if read.ok:
                counts["images"] += 1
                counts["positive"] += int(read.positive)
            else:
                counts["failed" if read.refused_by == "reader" else "not_chest"] += 1
    return counts


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _safe_name(image_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in image_id)[:120]
