"""Post-processing as data: probability map -> mask; probability -> verdict.

* :class:`PostProcess` turns a probability map into the outlined mask (pixels
  above ``pixel_threshold``, connected components under ``min_area`` pixels
  removed) and names the mask evidence (the ``evidence_pixels``-th highest
  pixel probability) that feeds the image-level probability. Pixel counts are
  given at ``reference_size`` and scaled with resolution.
* :class:`OperatingPoint` is a named threshold on the image-level probability
  with the sensitivity and specificity it had on the tune split; the verdict
  is "suspected" at or above it.

Everything here is tuned on the tune split by :func:`tune_mask` and
:func:`choose_operating_points` and travels with the weights in the card.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from pneumo import metrics


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
        return PostProcess(self.pixel_threshold, int(round(self.min_area * f)),
                           max(1, int(round(self.evidence_pixels * f))), size)


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
        return cls(name, float(d["threshold"]), float(d.get("sensitivity", float("nan"))),
                   float(d.get("specificity", float("nan"))), d.get("description", ""))


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


def tune_mask(maps: np.ndarray, truths: np.ndarray, reference_size: int,
              evidence: int = 100, pixel_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7),
              min_areas=(0, 20, 80, 200)) -> tuple[PostProcess, float]:
    """Mask thresholds that maximise the mean Dice on positive images.

    Args:
        maps: probability maps (N, size, size) of images with a pneumothorax mask.
        truths: their 0/1 masks.

    Returns:
        ``(PostProcess, mean positive Dice)``.
    """
    best, best_score = PostProcess(evidence_pixels=evidence, reference_size=reference_size), -1.0
    for pt, area in itertools.product(pixel_thresholds, min_areas):
        pp = PostProcess(pt, area, evidence, reference_size)
        score = float(np.mean([metrics.dice(t > 0, mask_from_map(m, pp))
                               for m, t in zip(maps, truths)])) if len(maps) else 0.0
        if score > best_score:
            best, best_score = pp, score
    return best, best_score


def siim_by_threshold(probability: np.ndarray, dice_if_positive: np.ndarray,
                      truth_positive: np.ndarray, thresholds: np.ndarray,
                      prevalence: float = metrics.REAL_PREVALENCE) -> np.ndarray:
    """SIIM score re-weighted to ``prevalence`` for each gate threshold.

    An image called positive scores ``dice_if_positive`` (its mask's Dice; 0
    on a negative image whose mask is not empty), one called negative scores 1
    on a negative image and 0 on a positive one.
    """
    out = np.zeros(len(thresholds))
    pos = np.asarray(truth_positive, bool)
    for i, t in enumerate(thresholds):
        called = probability >= t
        d = np.where(called, dice_if_positive, (~pos).astype(float))
        out[i] = prevalence * d[pos].mean() + (1 - prevalence) * d[~pos].mean()
    return out


def choose_operating_points(probability: np.ndarray, labels: np.ndarray,
                            dice_if_positive: np.ndarray, has_mask: np.ndarray,
                            min_sensitivity: float = 0.90,
                            prevalence: float = metrics.REAL_PREVALENCE
                            ) -> dict[str, OperatingPoint]:
    """The ``triage`` and ``balanced`` operating points on the tune split.

    ``triage``: the highest threshold whose sensitivity is at least
    ``min_sensitivity``. ``balanced``: the threshold with the best SIIM score
    re-weighted to ``prevalence`` (images with a mask only).
    """
    probability = np.asarray(probability, np.float64)
    labels = np.asarray(labels, bool)
    candidates = np.unique(np.concatenate([probability, [1.0 + 1e-9]]))
    sens = np.array([(probability[labels] >= t).mean() for t in candidates])
    ok = candidates[sens >= min_sensitivity]
    triage_t = float(ok.max()) if len(ok) else float(candidates.min())
    m = np.asarray(has_mask, bool)
    scores = siim_by_threshold(probability[m], dice_if_positive[m], labels[m], candidates,
                               prevalence)
    balanced_t = float(candidates[int(np.argmax(scores))])

    def point(name: str, t: float, text: str) -> OperatingPoint:
        s, sp = metrics.sensitivity_specificity(labels, probability >= t)
        return OperatingPoint(name, t, s, sp, text)

    return {
        "triage": point("triage", triage_t, f"sensitivity at least {min_sensitivity:.0%} on the "
                        "tune split: fewer missed pneumothoraces, more false alarms"),
        "balanced": point("balanced", balanced_t, f"best SIIM score at {prevalence:.0%} "
                          "prevalence on the tune split: fewer false alarms"),
    }
