"""The work behind an upload, as plain functions testable without HTTP.

``analyse_upload`` reads the bytes, runs the model, renders every artefact
into a staging folder and commits the result to the store.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo import overlay, rle
from pneumo.imaging import read_image
from pneumo.inference import Predictor
from pneumo.laterality import patient_side

from app.store import ResultRow, Store, new_id

THUMB_SIDE = 160


def _png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, "PNG", compress_level=1)


def render_artefacts(folder: Path, pixels: np.ndarray, mask: np.ndarray,
                     prob: np.ndarray) -> None:
    """Write the viewer's layers and the downloads into ``folder``."""
    _png(pixels, folder / "image.png")
    _png((mask * 255).astype(np.uint8), folder / "mask.png")
    _png(overlay.mask_rgba(mask), folder / "mask_layer.png")
    contour = overlay.contour(np.zeros_like(pixels), mask)
    alpha = (contour.max(axis=2) > 0).astype(np.uint8) * 255
    _png(np.dstack([contour, alpha]), folder / "contour_layer.png")
    _png(overlay.heatmap_rgba(prob, pixels.shape), folder / "heatmap_layer.png")
    _png(overlay.filled(pixels, mask, 0.4), folder / "overlay.png")
    thumb = Image.fromarray(overlay.filled(pixels, mask, 0.5))
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    thumb.save(folder / "thumb.jpg", "JPEG", quality=80)


def analyse_upload(data: bytes, owner: str, predictor: Predictor, store: Store,
                   max_pixels: int) -> ResultRow:
    """Read, predict, render and store one uploaded file.

    Raises:
        PneumoError: the file is not a usable image (nothing is stored).
    """
    t0 = time.perf_counter()
    record = read_image(data, max_pixels=max_pixels)
    t1 = time.perf_counter()
    pred = predictor.predict(record)
    t2 = time.perf_counter()
    side = patient_side(pred.mask, record.meta)
    result_id = new_id()
    staged = store.staging(result_id)
    try:
        render_artefacts(staged, record.pixels, pred.mask, pred.probability_map)
        encoded = rle.encode(pred.mask)
        (staged / "mask_rle.txt").write_text(encoded + "\n")
        if record.meta.format == "DICOM":
            (staged / "source.dcm").write_bytes(data)
        t3 = time.perf_counter()
        timings = {"decode_s": t1 - t0, **pred.timings, "predict_total_s": t2 - t1,
                   "render_s": t3 - t2}
        row = ResultRow(
            id=result_id, owner=owner, created=time.time(),
            source_format=record.meta.format, positive=pred.positive,
            probability=pred.probability, threshold=pred.threshold, area_px=pred.area_px,
            area_cm2=pred.area_cm2, side=side.to_dict(), meta=record.meta.to_dict(),
            identifiers=record.identifiers.to_dict(), model=predictor.name, rle=encoded,
            timings={k: round(v, 4) for k, v in timings.items()})
        store.commit(row, staged)
    except BaseException:
        store.discard(staged)
        raise
    return row


def seg_bytes(store: Store, row: ResultRow, deidentify: bool = False) -> bytes:
    """DICOM SEG for a DICOM result, built from the stored source and mask."""
    from pneumo.seg import make_seg
    source = store.file(row.id, "source.dcm").read_bytes()
    mask = np.asarray(Image.open(store.file(row.id, "mask.png"))) > 127
    return make_seg(source, mask, row.model, deidentify=deidentify)


def deidentified_png(path: Path) -> bytes:
    """Re-encode a PNG without any text chunks (no metadata travels with it)."""
    buf = io.BytesIO()
    Image.open(path).save(buf, "PNG")
    return buf.getvalue()
