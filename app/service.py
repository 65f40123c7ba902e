"""The work behind an upload, as plain functions testable without HTTP.

``analyse_upload`` reads the bytes, runs the model, writes the few files
every later view is made from into a staging folder and commits the result
to the store. The upload writes only what is cheap and sufficient:

``pixels.npy``
    the X-ray as displayed (uint8, original size), the source of every image;
``prob.png``
    the probability map at the model's resolution (uint8, 0..255), which the
    viewer turns into its heat map;
``mask_rle.txt``
    the mask as SIIM RLE (also kept in the database row);
``source.dcm``
    DICOM uploads only, for the DICOM Segmentation download.

Everything a person downloads or looks at (``image.png``, ``mask.png``,
``overlay.png``, ``thumb.jpg``) is rendered from those on first request and
cached beside them, so encoding PNGs never delays the answer to an upload
(see benchmarks/README.md). The viewer builds its overlay layers (filled,
contour, heat map) in the browser from ``mask.png`` and ``prob.png``.
"""
from __future__ import annotations

import io
import logging
import os
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pneumo import overlay, rle
from pneumo.imaging import read_image
from pneumo.inference import Predictor
from pneumo.laterality import patient_side
from pneumo.postprocess import review_band

from app.store import ResultRow, Store, new_id

log = logging.getLogger("pneumo.app")

THUMB_SIDE = 160


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def write_upload_files(folder: Path, pixels: np.ndarray, prob: np.ndarray,
                       encoded_mask: str) -> None:
    """The files written while the uploader waits (a few milliseconds)."""
    np.save(folder / "pixels.npy", np.ascontiguousarray(pixels, np.uint8))
    prob_u8 = np.round(np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8)
    (folder / "prob.png").write_bytes(_png_bytes(prob_u8))
    (folder / "mask_rle.txt").write_text(encoded_mask + "\n")


def result_pixels(store: Store, row: ResultRow) -> np.ndarray:
    """The displayed X-ray of a stored result."""
    npy = store.file(row.id, "pixels.npy")
    if npy.exists():
        return np.load(npy, allow_pickle=False)
    # results stored before pixels.npy existed kept image.png instead
    return np.asarray(Image.open(store.file(row.id, "image.png")).convert("L"))


def result_mask(store: Store, row: ResultRow, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The predicted mask of a stored result (bool, X-ray size)."""
    if shape is None:
        shape = result_pixels(store, row).shape
    return rle.decode(row.rle, shape)


def _render_image(store, row) -> bytes:
    return _png_bytes(result_pixels(store, row))


def _render_mask(store, row) -> bytes:
    return _png_bytes(result_mask(store, row).astype(np.uint8) * 255)


def _filled(store, row, opacity: float) -> np.ndarray:
    pixels = result_pixels(store, row)
    return overlay.filled(pixels, result_mask(store, row, pixels.shape), opacity)


def _render_overlay(store, row) -> bytes:
    return _png_bytes(overlay.burn_label(_filled(store, row, overlay.DEFAULT_OPACITY)))


def _render_thumb(store, row) -> bytes:
    thumb = Image.fromarray(_filled(store, row, 0.5))
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return buf.getvalue()


#: Longest side of the rendition the viewer shows (the full-size files stay for downloads).
VIEW_SIDE = 2048


def view_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of the viewer's rendition of an image of ``shape``."""
    rows, cols = int(shape[0]), int(shape[1])
    f = min(1.0, VIEW_SIDE / max(rows, cols, 1))
    return max(1, round(rows * f)), max(1, round(cols * f))


def _render_view(store, row) -> bytes:
    pixels = result_pixels(store, row)
    rows, cols = view_shape(pixels.shape)
    if (rows, cols) != pixels.shape:
        pixels = cv2.resize(pixels, (cols, rows), interpolation=cv2.INTER_AREA)
    return _png_bytes(pixels)


def _render_view_mask(store, row) -> bytes:
    mask = result_mask(store, row).astype(np.float32)
    rows, cols = view_shape(mask.shape)
    if (rows, cols) != mask.shape:
        mask = cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_AREA)
    return _png_bytes((mask > 0.5).astype(np.uint8) * 255)


#: Files rendered on first request from the upload's files.
RENDERERS = {"image.png": _render_image, "mask.png": _render_mask,
             "overlay.png": _render_overlay, "thumb.jpg": _render_thumb,
             "view.png": _render_view, "view_mask.png": _render_view_mask}


def artefact(store: Store, row: ResultRow, name: str) -> Path | None:
    """Path of a result's file, rendering and caching it first if needed.

    ``None`` when the file does not exist and cannot be made (e.g. the result
    was deleted meanwhile). Two requests rendering the same file at once each
    write a private temporary file and rename it into place, so a reader
    never sees half a file.
    """
    path = store.file(row.id, name)
    if path.exists():
        return path
    render = RENDERERS.get(name)
    if render is None or not path.parent.is_dir():
        return None
    try:
        data = render(store, row)
        tmp = path.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except FileNotFoundError:  # deleted or purged while rendering
        return None
    except OSError as exc:
        log.warning("could not cache %s for a result: %s", name, type(exc).__name__)
        return None
    return path


def analyse_upload(data: bytes, owner: str, predictor: Predictor, store: Store,
                   max_pixels: int, file_name: str = "", batch: str = "") -> ResultRow:
    """Read, predict, render and store one uploaded file.

    ``file_name`` is the uploader's own name for the file, kept in the row for
    its owner's worklist (never logged, never used on disk).

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
        encoded = rle.encode(pred.mask)
        write_upload_files(staged, record.pixels, pred.heat_map if pred.heat_map is not None
                           else pred.probability_map, encoded)
        if record.meta.format == "DICOM":
            (staged / "source.dcm").write_bytes(data)
        t3 = time.perf_counter()
        timings = {"decode_s": t1 - t0, **pred.timings, "predict_total_s": t2 - t1,
                   "store_s": t3 - t2}
        row = ResultRow(
            id=result_id, owner=owner, created=time.time(),
            source_format=record.meta.format, positive=pred.positive,
            probability=pred.probability, threshold=pred.threshold, area_px=pred.area_px,
            area_cm2=pred.area_cm2, side=side.to_dict(), meta=record.meta.to_dict(),
            identifiers=record.identifiers.to_dict(), model=predictor.name, rle=encoded,
            timings={k: round(v, 4) for k, v in timings.items()}, file_name=file_name,
            probability_kind=predictor.card.probability_kind,
            operating_point=operating_point_facts(predictor, pred),
            finding_below_threshold=pred.finding_below_threshold, batch=batch)
        store.commit(row, staged)
    except BaseException:
        store.discard(staged)
        raise
    return row


def operating_point_facts(predictor: Predictor, pred) -> dict:
    """What the result page says about how the verdict was made, stored with the row.

    ``threshold`` and ``review_band`` are on the shown probability's scale (re-based
    to the site's prevalence where ``PNEUMO_PREVALENCE`` is set); ``heat_scale`` is
    the factor the heat map's pixel probabilities were multiplied by, so the
    legend can mark where the mask threshold falls on it.
    """
    card = predictor.card
    facts = dict(pred.operating_point.to_dict(), mask_threshold=predictor.pp.pixel_threshold,
                 split=card.calibration.fitted_on if card.calibration else "tune",
                 calibrated_at=card.calibrated_at, site_prevalence=predictor.prevalence,
                 heat_scale=pred.probability if card.calibration is not None else 1.0,
                 threshold=pred.threshold,
                 calibrated_threshold=pred.operating_point.threshold)
    band = review_band(card.operating_points, pred.operating_point)
    if band is not None:
        facts["review_band"] = [predictor.shown(band[0]), predictor.shown(band[1])]
    return facts


def seg_bytes(store: Store, row: ResultRow, deidentify: bool = False) -> bytes:
    """DICOM SEG for a DICOM result, built from the stored source and mask; the same
    result always gives the same SEG (UIDs and dates derive from the result)."""
    from pneumo.seg import make_seg
    source = store.file(row.id, "source.dcm").read_bytes()
    mask = result_mask(store, row)
    return make_seg(source, mask, row.model, deidentify=deidentify, uid_seed=row.id,
                    created=row.created)
