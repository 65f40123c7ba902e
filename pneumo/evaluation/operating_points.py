"""Fitting post-processing on the tune split: mask thresholds and operating points.

:func:`tune_mask` picks the pixel threshold and minimum area of
:class:`~pneumo.inference.postprocess.PostProcess`; :func:`choose_operating_points`
picks the ``triage`` and ``balanced`` thresholds on the image-level probability. Both
travel with the weights in the card; serving only applies them.
"""

from __future__ import annotations

import itertools

import numpy as np

from pneumo.evaluation import metrics
from pneumo.inference.postprocess import OperatingPoint, PostProcess, mask_from_map


def tune_mask(
    maps: np.ndarray,
    truths: np.ndarray,
    reference_size: int,
    evidence: int = 100,
    pixel_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7),
    min_areas=(0, 20, 80, 200),
) -> tuple[PostProcess, float]:
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
        score = (
            float(
                np.mean([metrics.dice(t > 0, mask_from_map(m, pp)) for m, t in zip(maps, truths)])
            )
            if len(maps)
            else 0.0
        )
        if score > best_score:
            best, best_score = pp, score
    return best, best_score


def siim_by_threshold(
    probability: np.ndarray,
    dice_if_positive: np.ndarray,
    truth_positive: np.ndarray,
    thresholds: np.ndarray,
    prevalence: float = metrics.REAL_PREVALENCE,
) -> np.ndarray:
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


def choose_operating_points(
    probability: np.ndarray,
    labels: np.ndarray,
    dice_if_positive: np.ndarray,
    has_mask: np.ndarray,
    min_sensitivity: float = 0.95,
    prevalence: float = metrics.REAL_PREVALENCE,
) -> dict[str, OperatingPoint]:
    """The ``triage`` and ``balanced`` operating points on the tune split.

    ``balanced``: the threshold with the best SIIM score re-weighted to
    ``prevalence`` (images with a mask only). ``triage``: the highest
    threshold whose sensitivity is at least ``min_sensitivity``, and always a
    different, lower point than ``balanced``: where the balanced point already
    reaches that sensitivity, triage is the highest threshold that finds more
    positives than balanced does (or half the balanced threshold when balanced
    finds them all), so the two settings never behave the same.
    """
    probability = np.asarray(probability, np.float64)
    labels = np.asarray(labels, bool)
    candidates = np.unique(np.concatenate([probability, [1.0 + 1e-9]]))
    sens = np.array([(probability[labels] >= t).mean() for t in candidates])
    m = np.asarray(has_mask, bool)
    scores = siim_by_threshold(
        probability[m], dice_if_positive[m], labels[m], candidates, prevalence
    )
    balanced_t = float(candidates[int(np.argmax(scores))])
    ok = candidates[sens >= min_sensitivity]
    triage_t = float(ok.max()) if len(ok) else float(candidates.min())
    if triage_t >= balanced_t:
        balanced_sens = (probability[labels] >= balanced_t).mean()
        more = candidates[(candidates < balanced_t) & (sens > balanced_sens)]
        triage_t = float(more.max()) if len(more) else balanced_t / 2.0

    def point(name: str, t: float, text: str) -> OperatingPoint:
        s, sp = metrics.sensitivity_specificity(labels, probability >= t)
        return OperatingPoint(name, t, s, sp, text)

    return {
        "triage": point(
            "triage",
            triage_t,
            f"sensitivity at least {min_sensitivity:.0%} on the "
            "tune split: fewer missed pneumothoraces, more false alarms",
        ),
        "balanced": point(
            "balanced",
            balanced_t,
            f"best SIIM score at {prevalence:.0%} prevalence on the tune split: fewer false alarms",
        ),
    }


def review_floor(
    probability: np.ndarray,
    labels: np.ndarray,
    upper: float,
    sources: np.ndarray | None = None,
    max_share: float = 0.10,
) -> float:
    """The lowest probability of the review band below ``upper`` (the verdict threshold)
    such that at most ``max_share`` of the normal films of every source fall in
    ``[floor, upper)``: the sub-threshold note then stays something a reader sees on
    about one normal film in ten at most, not on every other one."""
    probability = np.asarray(probability, np.float64)
    neg = ~np.asarray(labels, bool)
    groups = (
        [neg]
        if sources is None
        else [neg & (np.asarray(sources) == s) for s in sorted(set(np.asarray(sources).tolist()))]
    )
    floor = 0.0
    for g in groups:
        below = np.sort(probability[g & (probability < upper)])[::-1]  # highest first
        allowed = int(np.floor(max_share * int(g.sum())))
        if len(below) > allowed:  # the band must stop above the (allowed + 1)-th highest
            floor = max(floor, float(np.nextafter(below[allowed], np.inf)))
    return floor
