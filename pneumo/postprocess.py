"""Post-processing as data: probability map -> binary mask and image verdict.

The "triplet" of the winning SIIM solution: an image is positive only if at
least ``min_top_pixels`` pixels exceed ``top_threshold``; then the mask is
the pixels above ``pixel_threshold``, with connected components smaller than
``min_area`` removed. Areas are given at the model's input size and scaled
with resolution.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from pneumo import metrics


@dataclass(frozen=True)
class PostProcess:
    """Thresholds that travel with the weights in the model card."""

    pixel_threshold: float = 0.5
    top_threshold: float = 0.75
    min_top_pixels: int = 40
    min_area: int = 20
    reference_size: int = 256

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PostProcess":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def scaled(self, size: int) -> "PostProcess":
        """Same thresholds with pixel counts scaled to a ``size`` x ``size`` map."""
        f = (size / self.reference_size) ** 2
        return PostProcess(self.pixel_threshold, self.top_threshold,
                           int(round(self.min_top_pixels * f)), int(round(self.min_area * f)),
                           size)


def image_probability(prob: np.ndarray, pp: PostProcess) -> float:
    """Image-level score: the ``min_top_pixels``-th largest pixel probability.

    The gate says positive exactly when this value exceeds ``top_threshold``,
    so the number doubles as the image-level probability shown to users.
    """
    flat = np.asarray(prob, np.float32).reshape(-1)
    k = max(1, min(pp.min_top_pixels, flat.size))
    return float(np.partition(flat, -k)[-k])


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def apply(prob: np.ndarray, pp: PostProcess) -> tuple[np.ndarray, float, bool]:
    """Apply the triplet to one probability map (size x size, values in [0, 1]).

    Returns:
        ``(bool mask, image probability, positive verdict)``.
    """
    p = pp.scaled(prob.shape[0]) if prob.shape[0] != pp.reference_size else pp
    score = image_probability(prob, p)
    if score < p.top_threshold:
        return np.zeros(prob.shape, bool), score, False
    mask = remove_small(prob > p.pixel_threshold, p.min_area)
    return mask, score, bool(mask.any())


def grid_search(probs: list[np.ndarray], truths: list[np.ndarray],
                reference_size: int, prevalence: float | None = metrics.REAL_PREVALENCE,
                pixel_thresholds=(0.3, 0.4, 0.5, 0.6),
                top_thresholds=(0.5, 0.6, 0.7, 0.8, 0.9),
                min_top_pixels=(10, 40, 100, 200),
                min_areas=(0, 20, 80)) -> tuple[PostProcess, float]:
    """Choose the triplet that maximises the (re-weighted) SIIM score on validation.

    Args:
        probs: probability maps at the model size.
        truths: boolean masks at the same size.
        prevalence: re-weight positives/negatives to this share (``None`` = raw mean).

    Returns:
        ``(best PostProcess, its score)``.
    """
    best, best_score = None, -1.0
    for pt, tt, k, a in itertools.product(pixel_thresholds, top_thresholds,
                                          min_top_pixels, min_areas):
        if tt < pt:
            continue
        pp = PostProcess(pt, tt, k, a, reference_size)
        preds = [apply(p, pp)[0] for p in probs]
        s = metrics.summarise(truths, preds, prevalence=prevalence or metrics.REAL_PREVALENCE)
        score = s["siim_score_reweighted"] if prevalence is not None else s["siim_score"]
        if np.isnan(score):
            score = s["siim_score"]
        if score > best_score:
            best, best_score = pp, score
    return best, float(best_score)
