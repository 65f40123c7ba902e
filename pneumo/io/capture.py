"""DICOM Secondary Capture of a result's overlay, labelled in its pixels, with highdicom.

For viewers that draw neither a SEG nor an SR: every viewer shows an image, so the
overlay travels as one (RGB, uncompressed) in the source's study, beside it.

* **The label is in the pixels.** "AI output, not a diagnosis" is burned into the
  top-left corner, white on a black box, the text about 3 % of the image's shorter
  side high (never below 12 pixels; an image too small for that is refused): viewers
  seldom show a header field, and whoever sees the picture sees the label. Burned In
  Annotation is ``YES`` so that a de-identifying archive knows the pixels carry text
  (here none about the patient).
* **It is derived, not acquired.** Image Type ``DERIVED\\SECONDARY``, Conversion Type
  ``WSD`` (made on a workstation), the source in Source Image Sequence, and the
  source's lossy-compression history kept (a JPEG source makes a lossy capture).
* **Identity.** Like the SEG (:mod:`pneumo.io.seg`): Series and SOP Instance UIDs
  derived from ``uid_seed`` (``"sc-series"``, ``"sc-sop"``), dates from the result's
  creation time, the source's patient and study, the source's missing or invalid
  UIDs replaced exactly as the SEG replaces them.
"""

from __future__ import annotations

import datetime as dt
import warnings

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from pneumo.io.seg import (
    creation_time,
    derived_header,
    pin_creation_time,
    quiet_highdicom,
    source_dataset,
)

#: The words every rendering of a result carries; the same as
#: ``pneumo.inference.overlay.AI_LABEL`` (a room this one may not import; a test
#: keeps the two equal).
AI_LABEL = "AI output, not a diagnosis"
#: The label's text height as a share of the image's shorter side, and its floor.
_LABEL_SHARE, _LABEL_MIN_PX = 0.03, 12
_ORIENTATION_LETTERS = {v.value for v in hd.PatientOrientationValuesBiped}


def _text_box(text: str, font) -> tuple[int, int, int, int]:
    """The bounds of ``text`` (one line or several) drawn at the origin."""
    return ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox((0, 0), text, font=font)


def _label_geometry(text: str, size: int) -> tuple[ImageFont.FreeTypeFont, int, int, int]:
    """The default font at ``size`` pixels, the padding, and the box's width and height
    (the box sits one padding away from the corner)."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = _text_box(text, font)
    pad = max(2, size // 4)
    return font, pad, right - left + 2 * pad, bottom - top + 2 * pad


def burn_notice(
    rgb: np.ndarray, text: str = AI_LABEL
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``text`` (one line or several) white on a black box in the top-left corner of an
    RGB image.

    The text is about 3 % of the image's shorter side high (12 pixels at least):
    legible on the full film and when a viewer shrinks it to fit the screen.

    Args:
        rgb: (rows, columns, 3) uint8, at least :func:`label_fits` large; not changed.

    Returns:
        The labelled copy, and the box as ``(left, top, right, bottom)`` pixel bounds
        (right and bottom exclusive), so callers and tests know which pixels it covers.
    """
    img = Image.fromarray(np.ascontiguousarray(rgb, np.uint8))
    size = max(_LABEL_MIN_PX, round(min(img.height, img.width) * _LABEL_SHARE))
    font, pad, width, height = _label_geometry(text, size)
    box = (pad, pad, min(img.width, pad + width), min(img.height, pad + height))
    draw = ImageDraw.Draw(img)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(0, 0, 0))
    left, top, _, _ = _text_box(text, font)
    draw.multiline_text((2 * pad - left, 2 * pad - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(img), box


def label_fits(shape: tuple[int, ...], text: str = AI_LABEL) -> bool:
    """Whether an image of ``shape`` holds the label at its smallest readable size with
    room to spare (a box at most a quarter of the height)."""
    _, pad, width, height = _label_geometry(text, _LABEL_MIN_PX)
    return shape[1] >= width + 2 * pad and shape[0] >= 4 * (height + pad)


def _check_overlay(overlay_rgb: np.ndarray) -> None:
    if (
        not isinstance(overlay_rgb, np.ndarray)
        or overlay_rgb.dtype != np.uint8
        or overlay_rgb.ndim != 3
        or overlay_rgb.shape[2] != 3
    ):
        raise ValueError(
            "overlay_rgb must be a (rows, columns, 3) uint8 array, got "
            f"{getattr(overlay_rgb, 'shape', None)} "
            f"{getattr(overlay_rgb, 'dtype', type(overlay_rgb).__name__)}"
        )
    if not label_fits(overlay_rgb.shape):
        raise ValueError(
            f"overlay_rgb {overlay_rgb.shape[:2]} is too small to carry a "
            f"readable '{AI_LABEL}' label"
        )


def _orientation(ds: pydicom.Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation where highdicom can write it (one letter each)."""
    values = [str(v) for v in (ds.get("PatientOrientation") or [])]
    if len(values) == 2 and all(v in _ORIENTATION_LETTERS for v in values):
        return values[0], values[1]
    return None


def make_secondary_capture(
    source: bytes | pydicom.Dataset,
    overlay_rgb: np.ndarray,
    *,
    model_name: str,
    uid_seed: str | None,
    created: dt.datetime | float | None,
    findings: str = "",
) -> pydicom.Dataset:
    """The overlay as a labelled Secondary Capture in the source's study, ready to send
    (STOW-RS) or write.

    Args:
        source: the uploaded DICOM (bytes) or its dataset.
        overlay_rgb: (rows, columns, 3) uint8, the overlay without a label (e.g.
            :func:`pneumo.inference.overlay.filled` of the source's pixels); the label
            is burned in here.
        model_name: recorded as the model that made it.
        uid_seed: derive the Series and SOP Instance UIDs (and replacements for the
            source's missing UIDs) from this, e.g. the result id; ``None``: random.
        created: content and instance creation time (datetime or POSIX seconds);
            ``None``: now.
        findings: what the result says, burned in under the label (lines of about 40
            characters; the structured report's verdict, probability, threshold, operating
            point and review band) and repeated in Image Comments.

    Raises:
        ValueError: ``overlay_rgb`` is not an RGB uint8 image large enough to label.
    """
    _check_overlay(overlay_rgb)
    quiet_highdicom()
    ds = source_dataset(source, uid_seed)
    created = creation_time(created)
    pixels, _ = burn_notice(overlay_rgb, "\n".join([AI_LABEL, *findings.splitlines()]))
    orientation = _orientation(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ds,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            # highdicom wants two letters for the patient coordinate system; an unknown
            # orientation is written empty below (Type 2), never guessed
            patient_orientation=orientation or ("L", "F"),
            series_number=902,
            series_description="Pneumothorax overlay (AI output, not a diagnosis)",
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            **derived_header("sc", uid_seed, model_name, created),
        )
    if orientation is None:
        sc.PatientOrientation = ""
    _describe(sc, ds, model_name, findings)
    pin_creation_time(sc, created)
    sc.DateOfSecondaryCapture, sc.TimeOfSecondaryCapture = sc.ContentDate, sc.ContentTime
    return sc


def _copy_body_part(sc: pydicom.Dataset, source: pydicom.Dataset) -> None:
    """Body Part Examined and Laterality as the source has them. Laterality is Type 2C:
    absent for an unpaired part (a chest, which the body part says), empty where
    nothing says which part it is."""
    for keyword in ("BodyPartExamined", "Laterality"):
        if source.get(keyword):
            setattr(sc, keyword, source[keyword].value)
    if not sc.get("BodyPartExamined") and "Laterality" not in sc:
        sc.Laterality = ""


def _describe(
    sc: pydicom.Dataset, source: pydicom.Dataset, model_name: str, findings: str = ""
) -> None:
    """What the pixels are: derived from the source, carrying burned-in text."""
    sc.BurnedInAnnotation = "YES"
    _copy_body_part(sc, source)
    sc.ConversionType = "WSD"
    said = "; ".join(line.strip() for line in findings.splitlines() if line.strip())
    sc.ImageComments = f"{AI_LABEL} ({model_name})" + (f": {said}" if said else "")
    sc.DerivationDescription = (
        f"Pneumothorax prediction of {model_name} over the source image; labelled '{AI_LABEL}'"
    )[:1024]
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    if str(source.get("LossyImageCompression", "")) == "01":
        for keyword in (
            "LossyImageCompression",
            "LossyImageCompressionRatio",
            "LossyImageCompressionMethod",
        ):
            if keyword in source:
                setattr(sc, keyword, source[keyword].value)
