"""Batch prediction of image files to a Kaggle submission CSV, scores and overlays."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.data import dataset
from pneumo.errors import NotChestXrayError, PneumoError
from pneumo.inference import overlay
from pneumo.inference.predictor import Predictor
from pneumo.inference.preprocess import model_image
from pneumo.io import rle
from pneumo.io.imaging import read_image
from pneumo.progress import track


def predict_files(predictor: Predictor, inputs: list[str], submission: str | Path,
                  scores_csv: str | Path | None = None, overlays: str | Path | None = None,
                  batch_size: int = 4, progress: bool = True) -> dict:
    """Batch prediction to a Kaggle submission CSV (+ scores CSV, overlay PNGs).

    Returns counts: ``{"images": n, "positive": k, "failed": f, "not_chest": g}``
    and ``"skipped"``: one line per file that could not be read or that the chest
    gate refused (left out of the CSVs), for the caller to print after the
    progress bar.
    """
    files = dataset.iter_image_files(inputs)
    if overlays:
        Path(overlays).mkdir(parents=True, exist_ok=True)
    sub_fh = open(submission, "w", newline="")
    sub = csv.writer(sub_fh)
    sub.writerow(["ImageId", "EncodedPixels"])
    sc_fh = open(scores_csv, "w", newline="") if scores_csv else None
    sc = csv.writer(sc_fh) if sc_fh else None
    if sc:
        sc.writerow(["ImageId", predictor.card.probability_kind, "area_px", "threshold",
                     "operating_point"])
    counts = {"images": 0, "positive": 0, "failed": 0, "not_chest": 0}
    skipped: list[str] = []
    iterator = range(0, len(files), batch_size)
    if progress:
        iterator = track(iterator, "predicting", unit="batch")
    try:
        for start in iterator:
            records, ids = [], []
            for path in files[start:start + batch_size]:
                try:
                    rec = read_image(path)
                    predictor.check_header(rec)
                except NotChestXrayError as exc:
                    counts["not_chest"] += 1
                    skipped.append(f"skipped {path.name}: {exc}")
                    continue
                except PneumoError as exc:
                    counts["failed"] += 1
                    skipped.append(f"skipped {path.name}: {exc}")
                    continue
                records.append(rec)
                ids.append(rec.image_id if rec.meta.format == "DICOM" and rec.image_id
                           else path.stem)
            if not records:
                continue
            batch = np.stack([model_image(r.pixels, predictor.pcfg) for r in records])
            model_out = predictor.output(batch)
            for index, (rec, image_id) in enumerate(zip(records, ids)):
                try:
                    predictor.check_appearance(model_out, index)
                except NotChestXrayError as exc:
                    counts["not_chest"] += 1
                    skipped.append(f"skipped {image_id}: {exc}")
                    continue
                pred = predictor.finish(rec, model_out, index)
                sub.writerow([image_id, rle.encode(pred.mask)])
                if sc:
                    sc.writerow([image_id, f"{pred.probability:.4f}", pred.area_px,
                                 f"{pred.threshold:.4f}", pred.operating_point.name])
                if overlays:
                    Image.fromarray(overlay.filled(rec.pixels, pred.mask)).save(
                        Path(overlays) / f"{_safe_name(image_id)}.png")
                counts["images"] += 1
                counts["positive"] += int(pred.positive)
    finally:
        sub_fh.close()
        if sc_fh:
            sc_fh.close()
    return dict(counts, skipped=skipped)


def _safe_name(image_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in image_id)[:120]
