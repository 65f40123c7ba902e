"""Which side of the patient a predicted pneumothorax is on.

Image columns map to the patient's left or right through Patient
Orientation (0020,0020): its first value is the direction of increasing
column index ("L" means the image's right edge is the patient's left, the
standard display of a PA or AP chest film). Without it, a PA/AP View
Position implies the standard display, which is stated as an assumption.
Without either, only the image side is known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pneumo.io.imaging import DisplayMetadata


@dataclass(frozen=True)
class Side:
    """Result of :func:`patient_side`."""

    side: str | None  # "right", "left", "bilateral" or None when unknown
    image_side: str | None  # "image left", "image right", "both halves" or None (empty mask)
    basis: str  # how the side was worked out, in words

    @property
    def label(self) -> str:
        if self.image_side is None:
            return "no finding"
        if self.side is None:
            return f"unknown ({self.image_side}; {self.basis})"
        text = {"right": "patient's right", "left": "patient's left", "bilateral": "both sides"}[
            self.side
        ]
        return f"{text} ({self.basis})"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def _image_side(mask: np.ndarray, both: float = 0.2) -> str | None:
    cols = mask.sum(axis=0)
    total = cols.sum()
    if total == 0:
        return None
    half = mask.shape[1] // 2
    left_share = cols[:half].sum() / total
    if both <= left_share <= 1 - both:
        return "both halves"
    return "image left" if left_share > 0.5 else "image right"


def patient_side(mask: np.ndarray, meta: DisplayMetadata) -> Side:
    """Patient side of the mask's area, using orientation or view position."""
    image_side = _image_side(np.asarray(mask, bool))
    if image_side is None:
        return Side(None, None, "empty mask")
    orientation = meta.patient_orientation or ()
    row_dir = orientation[0].upper() if orientation else ""
    if row_dir.startswith("L"):
        flip, basis = False, "from Patient Orientation"
    elif row_dir.startswith("R"):
        flip, basis = True, "from Patient Orientation"
    elif (meta.view_position or "").upper() in ("PA", "AP"):
        view = meta.view_position.upper()
        flip, basis = (
            False,
            f"assuming standard display of {'an' if view == 'AP' else 'a'} {view} film",
        )
    else:
        return Side(None, image_side, "image has no orientation or view position")
    if image_side == "both halves":
        return Side("bilateral", image_side, basis)
    on_image_left = image_side == "image left"
    # standard display: the image's left half is the patient's right
    side = "right" if on_image_left != flip else "left"
    return Side(side, image_side, basis)
