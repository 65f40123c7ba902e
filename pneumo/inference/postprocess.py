"""Post-processing as data: probability map -> mask; probability -> verdict.

* :class:`PostProcess` turns a probability map into the outlined mask (pixels
  above ``pixel_threshold``, connected components under ``min_area`` pixels
  removed) and names the mask evidence (the ``evidence_pixels``-th highest
  pixel probability) that feeds the image-level probability. Pixel counts are
  given at ``reference_size`` and scaled with resolution.
* :class:`OperatingPoint` is a named threshold on the image-level probability
  with the sensitivity and specificity it had on the tune split; the verdict
  is "suspected" at or above it.

Everything here is fitted on the tune split (by
:mod:`pneumo.evaluation.operating_points`) and travels with the weights in the card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PostProcess:
    """Mask thresholds and the evidence size, at ``reference_size``."""

    pixel_threshold: float = 0.5
    min_area: int = 20
    evidence_pixels: int = 100
    reference_size: int = 256

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PostProcess":
        d = dict(d)
        if "min_top_pixels" in d and "evidence_pixels" not in d:  # cards before model v2
            d["evidence_pixels"] = d["min_top_pixels"]
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def scaled(self, size: int) -> "PostProcess":
        """Same thresholds with pixel counts scaled to a ``size`` x ``size`` map."""
        if size == self.reference_size:
            return self
        f = (size / self.reference_size) ** 2
        return PostProcess(
            self.pixel_threshold,
            int(round(self.min_area * f)),
            max(1, int(round(self.evidence_pixels * f))),
            size,
        )


@dataclass(frozen=True)
class OperatingPoint:
    """A named threshold on the image-level probability, with its tune-split figures."""

    name: str
    threshold: float
    sensitivity: float
    specificity: float
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "OperatingPoint":
        return cls(
            name,
            float(d["threshold"]),
            float(d.get("sensitivity", float("nan"))),
            float(d.get("specificity", float("nan"))),
            d.get("description", ""),
        )


def area_cm2(
    area_px: int, spacing_mm: "tuple[float, float] | list[float] | None", spacing_warning=None
) -> float | None:
    """An area in pixels of the image in cm², where its pixel spacing (mm per row and
    column) is known and trusted (no ``spacing_warning``); else ``None``."""
    if not spacing_mm or spacing_warning:
        return None
    return area_px * float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def mask_from_map(prob: np.ndarray, pp: PostProcess) -> np.ndarray:
    """The outlined region of one probability map (size x size), before any verdict."""
    p = pp.scaled(prob.shape[0])
    return remove_small(prob > p.pixel_threshold, p.min_area)


def evidence_pixels(pp: PostProcess, size: int) -> int:
    """The evidence rank ``k`` for maps of ``size`` x ``size``."""
    return pp.scaled(size).evidence_pixels


def upsample_probability(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a model-size map to the image's ``shape`` (rows, columns)."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(shape):
        return prob
    return cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def review_band(
    points: dict[str, OperatingPoint], active: OperatingPoint, floor: float | None = None
) -> tuple[float, float] | None:
    """The probabilities, below the active point, at which a reader should still look.

    From the highest other operating point below ``active`` (or the card's fitted
    ``floor``, where that is higher: few normal films fall in the band) up to
    ``active``'s threshold (with the usual two points: between triage and balanced).
    ``None`` when no point lies below (the triage setting itself).
    """
    lower = [p.threshold for p in points.values() if p.threshold < active.threshold]
    if not lower:
        return None
    start = max(lower) if floor is None else max(max(lower), floor)
    return (start, active.threshold) if start < active.threshold else None


def heat_map(prob_map: np.ndarray, probability: float | None) -> np.ndarray:
    """What the viewer colours: each pixel's probability times the image's.

    A film with a low calibrated probability then shows no strong colour
    anywhere, whatever its pixel map holds, and a pixel's colour reads as
    "this image has a pneumothorax, and it is here". With no calibrated
    probability (``None``) the pixel map is shown as it is.

    Returns:
        ``float32`` array of ``prob_map``'s shape in [0, 1].
    """
    shown = np.clip(np.asarray(prob_map, np.float32), 0.0, 1.0)
    if probability is None:
        return shown
    return shown * np.float32(min(max(float(probability), 0.0), 1.0))


def rebase_probability(
    p: np.ndarray | float, from_prevalence: float, to_prevalence: float
) -> np.ndarray:
    """Shift calibrated probabilities from one prevalence to another (prior shift on the odds).

    ``odds' = odds * [to / (1 - to)] / [from / (1 - from)]``: the likelihood
    ratio the image carries is kept; only the prior changes.
    """
    for name, v in (("from_prevalence", from_prevalence), ("to_prevalence", to_prevalence)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must be strictly between 0 and 1, got {v}")
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    factor = (to_prevalence / (1 - to_prevalence)) / (from_prevalence / (1 - from_prevalence))
    odds = p / (1 - p) * factor
    return odds / (1 + odds)
