"""What is made from a stored result: the images a person looks at or downloads, and
its DICOM Segmentation.

An upload stores only ``pixels.npy``, ``prob.png``, ``mask_rle.txt`` and (DICOM)
``source.dcm`` (:mod:`app.service`). Everything a person downloads or looks at
(``image.png``, ``mask.png``, ``overlay.png``, ``thumb.jpg``, the viewer's
``view.png`` and ``view_mask.png``) is rendered from those on first request
and kept beside them, so encoding PNGs never delays the answer to an upload
(see benchmarks/README.md); after an upload from the browser, the viewer's two are made
at once in the background (:func:`prerender`), since its page asks for them next. The
viewer builds its overlay layers (filled, contour, heat map) in the browser from
``view_mask.png`` and ``prob.png``.
"""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
import pydicom
from PIL import Image

from pneumo.inference import overlay, postprocess
from pneumo.io import rle
from pneumo.io.capture import make_secondary_capture
from pneumo.io.seg import make_seg, make_seg_dataset, source_dataset
from pneumo.io.sr import make_review_sr_dataset, make_sr_dataset

from app.store.records import ResultRow, Review
from app.store.results import Results

log = logging.getLogger(__name__)

THUMB_SIDE = 160


def png_bytes(arr: np.ndarray) -> bytes:
    """A uint8 array as PNG (fast compression: these files are written while people wait)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


class ResultGone(Exception):
    """The result's files were deleted or purged while it was being read."""


def result_pixels(results: Results, row: ResultRow) -> np.ndarray:
    """The displayed X-ray of a stored result."""
    data = results.read_file(row.id, "pixels.npy")
    if data is not None:
        return np.load(io.BytesIO(data), allow_pickle=False)
    # results stored before pixels.npy existed kept image.png instead
    data = results.read_file(row.id, "image.png")
    if data is None:
        raise ResultGone(row.id)
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def source_file(results: Results, row: ResultRow) -> bytes:
    """The file a model reads again (``pneumo reread``): a DICOM as it was received, else
    the displayed X-ray as a PNG (lossless: read again, it gives the same pixels)."""
    if row.source_format == "DICOM":
        data = results.read_file(row.id, "source.dcm")
        if data is not None:
            return data
    return png_bytes(result_pixels(results, row))


def result_mask(
    results: Results, row: ResultRow, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """The predicted mask of a stored result (bool, X-ray size)."""
    if shape is None:
        shape = result_pixels(results, row).shape
    return rle.decode(row.rle, shape)


def _render_image(results, row) -> bytes:
    return png_bytes(result_pixels(results, row))


def _render_mask(results, row) -> bytes:
    return png_bytes(result_mask(results, row).astype(np.uint8) * 255)


def _filled(results, row, opacity: float) -> np.ndarray:
    pixels = result_pixels(results, row)
    return overlay.filled(pixels, result_mask(results, row, pixels.shape), opacity)


def _render_overlay(results, row) -> bytes:
    return png_bytes(overlay.burn_label(_filled(results, row, overlay.DEFAULT_OPACITY)))


def thumbnail(pixels: np.ndarray, mask: np.ndarray) -> bytes:
    """The worklist's thumbnail: the X-ray at most :data:`THUMB_SIDE` pixels a side with
    the mask filled in at half opacity, as JPEG. Made with the result (a few milliseconds:
    shrunk first, then filled), so a worklist never waits for it."""
    rows, cols = pixels.shape[:2]
    f = min(1.0, THUMB_SIDE / max(rows, cols, 1))
    size = (max(1, round(cols * f)), max(1, round(rows * f)))
    if f < 1.0:
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    buf = io.BytesIO()
    Image.fromarray(overlay.filled(pixels, mask, 0.5)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _render_thumb(results, row) -> bytes:  # results stored before thumbnails came with them
    pixels = result_pixels(results, row)
    return thumbnail(pixels, result_mask(results, row, pixels.shape))


#: Longest side of the rendition the viewer shows (the full-size files stay for downloads).
VIEW_SIDE = 2048


def view_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of the viewer's rendition of an image of ``shape``."""
    rows, cols = int(shape[0]), int(shape[1])
    f = min(1.0, VIEW_SIDE / max(rows, cols, 1))
    return max(1, round(rows * f)), max(1, round(cols * f))


def _render_view(results, row) -> bytes:
    pixels = result_pixels(results, row)
    rows, cols = view_shape(pixels.shape)
    if (rows, cols) != pixels.shape:
        pixels = cv2.resize(pixels, (cols, rows), interpolation=cv2.INTER_AREA)
    return png_bytes(pixels)


def _view_mask_png(mask: np.ndarray) -> bytes:
    """A mask at the image's size as the viewer's rendition: area-averaged to the view's
    size, white where at least half of a view pixel is in it."""
    mask = mask.astype(np.float32)
    rows, cols = view_shape(mask.shape)
    if (rows, cols) != mask.shape:
        mask = cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_AREA)
    return png_bytes((mask > 0.5).astype(np.uint8) * 255)


def _render_view_mask(results, row) -> bytes:
    return _view_mask_png(result_mask(results, row))


def _corrected(row: ResultRow, corrected_rle: str) -> np.ndarray:
    """A reviewer's corrected mask (SIIM RLE at the image's size) as a bool array."""
    shape = (int(row.meta.get("rows", 0)), int(row.meta.get("columns", 0)))
    return rle.decode(corrected_rle, shape)


def corrected_view_mask(row: ResultRow, corrected_rle: str) -> bytes:
    """A reviewer's corrected mask at the viewer's size, as ``view_mask.png`` is for the
    model's. Made on each request (a later review replaces it)."""
    return _view_mask_png(_corrected(row, corrected_rle))


def corrected_mask(row: ResultRow, corrected_rle: str) -> bytes:
    """A reviewer's corrected mask at the image's size (white where the region is)."""
    return png_bytes(_corrected(row, corrected_rle).astype(np.uint8) * 255)


#: Files rendered on first request from the upload's files.
RENDERERS = {
    "image.png": _render_image,
    "mask.png": _render_mask,
    "overlay.png": _render_overlay,
    "thumb.jpg": _render_thumb,
    "view.png": _render_view,
    "view_mask.png": _render_view_mask,
}


#: What the result page's viewer loads first, besides ``prob.png`` (stored with the result).
VIEWER_FILES = ("view.png", "view_mask.png")


def prerender(results: Results, row: ResultRow) -> None:
    """Make and keep a result's viewer files now (:data:`VIEWER_FILES`), ahead of the page
    that will ask for them; one that cannot be made is made on request instead."""
    for name in VIEWER_FILES:
        try:
            artefact(results, row, name)
        except Exception as exc:  # noqa: BLE001 - a background nicety: never an error
            log.warning("could not prepare %s of a result: %s", name, type(exc).__name__)


def artefact(results: Results, row: ResultRow, name: str) -> bytes | None:
    """One file of a result, rendering and keeping it first if needed.

    ``None`` when the file does not exist and cannot be made (e.g. the result
    was deleted meanwhile).
    """
    data = results.read_file(row.id, name)
    if data is not None:
        return data
    render = RENDERERS.get(name)
    if render is None:
        return None
    try:
        data = render(results, row)
    except ResultGone:  # deleted or purged while rendering
        return None
    try:
        if not results.add_file(row.id, name, data):
            return None
    except OSError as exc:  # a full disk: serve it now, render again next time
        log.warning("could not cache %s for a result: %s", name, type(exc).__name__)
    return data


def _dicom_parts(
    results: Results, row: ResultRow
) -> tuple[pydicom.Dataset, np.ndarray, np.ndarray]:
    """What a DICOM result's objects are made from, each read once: the source's header
    as every object copies it (read and repaired once by
    :func:`pneumo.io.seg.source_dataset`: no preamble, an unknown character set, no SOP
    Class or Modality), the displayed X-ray and the predicted mask."""
    source = results.read_file(row.id, "source.dcm")
    if source is None:
        raise ResultGone(row.id)
    pixels = result_pixels(results, row)
    return source_dataset(source, row.id), pixels, result_mask(results, row, pixels.shape)


def seg_dataset(results: Results, row: ResultRow, parts: tuple | None = None) -> pydicom.Dataset:
    """The DICOM SEG of a DICOM result, built from the stored source and mask; the same
    result always gives the same SEG (UIDs and dates derive from the result)."""
    source, _, mask = parts or _dicom_parts(results, row)
    return make_seg_dataset(source, mask, row.model, uid_seed=row.id, created=row.created)


def seg_bytes(results: Results, row: ResultRow, deidentify: bool = False) -> bytes:
    """The DICOM SEG file of a DICOM result (optionally de-identified)."""
    source, _, mask = _dicom_parts(results, row)
    return make_seg(
        source, mask, row.model, deidentify=deidentify, uid_seed=row.id, created=row.created
    )


#: The DICOM objects a DICOM result has, by the name of their download and setting.
DICOM_OBJECTS = ("seg", "sr", "sc")


def _model_name_version(row: ResultRow) -> tuple[str, str]:
    """``"name (version)"`` as stored, split."""
    name, _, version = row.model.partition(" (")
    return name, version.rstrip(")") or "?"


def _sr_side(side: dict) -> str:
    """The stored side (:mod:`pneumo.inference.laterality`) in the SR's words."""
    if not side or side.get("image_side") is None:
        return "none"
    return {"right": "right", "left": "left", "bilateral": "both"}.get(side.get("side"), "unknown")


def sr_dataset(
    results: Results, row: ResultRow, parts: tuple | None = None, seg: pydicom.Dataset | None = None
) -> pydicom.Dataset:
    """The DICOM Structured Report (TID 1500) of a DICOM result: the verdict, probability,
    operating point, area and side, referencing its SEG (made here unless given) and
    source; stable UIDs."""
    parts = parts or _dicom_parts(results, row)
    name, version = _model_name_version(row)
    return make_sr_dataset(
        parts[0],
        seg if seg is not None else seg_dataset(results, row, parts),
        positive=row.positive,
        probability=row.probability,
        probability_kind=row.probability_kind,
        operating_point=(row.operating_point or {}).get("name") or "default",
        threshold=row.threshold,
        area_px=row.area_px,
        area_cm2=row.area_cm2,
        side=_sr_side(row.side),
        model_name=name,
        model_version=version,
        uid_seed=row.id,
        created=row.created,
        below_threshold=row.finding_below_threshold,
    )


def sc_dataset(results: Results, row: ResultRow, parts: tuple | None = None) -> pydicom.Dataset:
    """A Secondary Capture of the overlay, labelled "AI output, not a diagnosis", for
    viewers that draw neither SEG nor SR; stable UIDs."""
    source, pixels, mask = parts or _dicom_parts(results, row)
    name, _ = _model_name_version(row)
    return make_secondary_capture(
        source,
        overlay.filled(pixels, mask),
        model_name=name,
        uid_seed=row.id,
        created=row.created,
        findings=sc_findings(row),
    )


def sc_findings(row: ResultRow) -> str:
    """What the Secondary Capture says under its label, as the page and the SR say it:
    the verdict with the probability (or uncalibrated score) against the operating
    point's threshold, the operating point, and for a negative verdict in the review
    band, that the heat map should be checked. Short lines, plain ASCII."""
    kind = "p" if row.probability_kind == "probability" else "score"
    p = min(max(row.probability, 0.0), 1.0)
    shown = "> 0.99" if p > 0.99 else "< 0.01" if p < 0.01 else f"{p:.2f}"
    if row.positive:
        verdict = f"Pneumothorax suspected: {kind} {shown} (threshold {row.threshold:.2f})"
    else:
        verdict = f"Not detected: {kind} {shown} (threshold {row.threshold:.2f})"
    point = (row.operating_point or {}).get("name") or "default"
    lines = [verdict, f"operating point: {point}"]
    if row.finding_below_threshold and not row.positive:
        lines.append("in the review band: check the heat map")
    return "\n".join(lines)


def review_seed(row: ResultRow, review: Review) -> str:
    """The UID seed of a review's objects: one review (reviewer and time) of one result,
    so sending it again replaces it, a later review adds its own, and the model's objects
    (seeded by the result id) are never replaced."""
    return f"{row.id}:review:{review.reviewer}:{review.created!r}"


def review_datasets(
    results: Results,
    row: ResultRow,
    review: Review,
    parts: tuple | None = None,
    model_seg: pydicom.Dataset | None = None,
) -> dict[str, pydicom.Dataset]:
    """A radiologist's review as DICOM objects beside the model's: ``"seg"``, their
    corrected mask as a SEG marked as theirs (only when they drew one), and ``"sr"``,
    their verdict as an SR (:func:`pneumo.io.sr.make_review_sr_dataset`) whose region is
    their SEG, or the model's (``model_seg``, made here unless given) when they agreed
    with a positive result without drawing, or none. UIDs from :func:`review_seed`."""
    parts = parts or _dicom_parts(results, row)
    source, _, mask = parts
    seed = review_seed(row, review)
    made: dict[str, pydicom.Dataset] = {}
    region, area_px = None, 0
    if review.corrected_rle is not None:
        corrected = _corrected(row, review.corrected_rle)
        made["seg"] = make_seg_dataset(
            source,
            corrected,
            row.model,
            uid_seed=seed,
            created=review.created,
            reviewer=review.reviewer_name,
        )
        region, area_px = made["seg"], int(corrected.sum())
    elif review.agrees and row.positive:
        region = model_seg if model_seg is not None else seg_dataset(results, row, parts)
        area_px = int(mask.sum())
    made["sr"] = make_review_sr_dataset(
        source,
        region,
        reviewer=review.reviewer_name,
        present=review.present(row.positive),
        review="agree" if review.agrees else (review.reason or "other"),
        area_px=area_px,
        area_cm2=postprocess.area_cm2(
            area_px, row.meta.get("pixel_spacing_mm"), row.meta.get("spacing_warning")
        ),
        model_name=row.model,
        uid_seed=seed,
        created=review.created,
    )
    return made


def dicom_objects(
    results: Results, row: ResultRow, kinds: tuple[str, ...], review: Review | None = None
) -> list[pydicom.Dataset]:
    """The DICOM objects ``kinds`` (of :data:`DICOM_OBJECTS`) of a DICOM result, SEG first:
    the stored files read once, the SEG made once (the SR references it). With a
    ``review``, the reviewer's objects of the same kinds follow the model's (their SEG
    when they drew a correction, their SR; :func:`review_datasets`)."""
    parts = _dicom_parts(results, row)
    made: dict[str, pydicom.Dataset] = {}
    if "seg" in kinds or "sr" in kinds:
        made["seg"] = seg_dataset(results, row, parts)
    if "sr" in kinds:
        made["sr"] = sr_dataset(results, row, parts, made["seg"])
    if "sc" in kinds:
        made["sc"] = sc_dataset(results, row, parts)
    objects = [made[k] for k in DICOM_OBJECTS if k in kinds]
    if review is not None and ("seg" in kinds or "sr" in kinds):
        theirs = review_datasets(results, row, review, parts, made["seg"])
        objects += [theirs[k] for k in ("seg", "sr") if k in kinds and k in theirs]
    return objects


def dataset_bytes(ds: pydicom.Dataset) -> bytes:
    """A dataset as a DICOM file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
