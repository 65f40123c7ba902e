"""Physical pixel size of a projection radiograph, read as the DICOM rules say, and
a plausibility check before any area is given in cm².

PS3.3 C.7.6.2.1.1 and C.8.11.x: *Pixel Spacing* (0028,0030) is the spacing in
the patient (its calibration is named by *Pixel Spacing Calibration Type*
(0028,0A02)); *Imager Pixel Spacing* (0018,1164) is at the detector's front
plane, and dividing it by the *Estimated Radiographic Magnification Factor*
(0018,1114) estimates the spacing in the patient. SIIM's 1024-pixel files
keep the spacing of the full-size film, so a chest comes out 14 cm wide: a
field of view outside :data:`FIELD_OF_VIEW_CM` gives no area in cm².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Plausible width and height of a chest radiograph's field of view, in cm.
FIELD_OF_VIEW_CM = (20.0, 50.0)


@dataclass(frozen=True)
class Spacing:
    """What is known about the pixel size of one image."""

    mm: tuple[float, float] | None  # (row, column) spacing in mm
    source: str | None  # how it was obtained, for display
    warning: str | None = None  # why areas in cm² must not be shown

    @property
    def usable(self) -> bool:
        return self.mm is not None and self.warning is None


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        if value is not None and len(value) == 2:
            row, col = float(value[0]), float(value[1])
            if row > 0 and col > 0:
                return row, col
    except (TypeError, ValueError):
        pass
    return None


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def field_of_view_warning(mm: tuple[float, float], rows: int, columns: int) -> str | None:
    """A reader-facing reason when ``rows`` x ``columns`` pixels of ``mm`` spacing
    cannot be a chest radiograph; ``None`` when plausible."""
    low, high = FIELD_OF_VIEW_CM
    width, height = columns * mm[1] / 10.0, rows * mm[0] / 10.0
    for size, word in ((width, "wide"), (height, "tall")):
        if not low <= size <= high:
            return (
                f"pixel spacing implausible: the image would be {size:.1f} cm {word} "
                f"(a chest radiograph is {low:.0f}-{high:.0f} cm)"
            )
    return None


def from_dataset(ds, rows: int, columns: int) -> Spacing:
    """The spacing of a DICOM dataset (``pydicom.Dataset`` or any mapping-like object
    with ``get``) whose image is ``rows`` x ``columns`` pixels."""
    mm, source = None, None
    pixel = _pair(ds.get("PixelSpacing"))
    imager = _pair(ds.get("ImagerPixelSpacing"))
    if pixel:
        calibration = str(ds.get("PixelSpacingCalibrationType") or "").strip().upper()
        mm = pixel
        source = (
            "Pixel Spacing, calibrated (" + calibration.lower() + ")"
            if calibration
            else "Pixel Spacing (calibration not stated)"
        )
    elif imager:
        factor = _positive(ds.get("EstimatedRadiographicMagnificationFactor"))
        if factor:
            mm = (imager[0] / factor, imager[1] / factor)
            source = (
                f"Imager Pixel Spacing divided by the estimated radiographic "
                f"magnification factor {factor:g}"
            )
        else:
            mm = imager
            source = "Imager Pixel Spacing (detector plane; magnification not corrected)"
    if mm is None:
        return Spacing(None, None)
    return Spacing(mm, source, field_of_view_warning(mm, rows, columns))
