"""Per-image segmentation and image-level classification metrics (numpy).

The SIIM rule: Dice of two empty masks is 1; any predicted pixel on an empty
image gives 0. The SIIM score is the mean per-image Dice.
"""

from __future__ import annotations

import numpy as np

REAL_PREVALENCE = 0.22  # share of positive images in the full SIIM-ACR training set


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two binary masks with the SIIM empty rule."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    total = t.sum() + p.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(t, p).sum() / total)


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union; both empty = 1."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    union = np.logical_or(t, p).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(t, p).sum() / union)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). NaN if one class."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, float)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), float)
    sorted_s = s[order]
    # average ranks for ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) over all score thresholds."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, float)
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float(((s >= t) & y).sum() / max(y.sum(), 1)) for t in thresholds]
    fpr = [0.0] + [float(((s >= t) & ~y).sum() / max((~y).sum(), 1)) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def sensitivity_specificity(labels, predicted) -> tuple[float, float]:
    """Sensitivity and specificity of binary image-level predictions (NaN if undefined)."""
    y, p = np.asarray(labels, bool), np.asarray(predicted, bool)
    sens = float((y & p).sum() / y.sum()) if y.sum() else float("nan")
    spec = float((~y & ~p).sum() / (~y).sum()) if (~y).sum() else float("nan")
    return sens, spec


def summarise(
    truths: list[np.ndarray],
    preds: list[np.ndarray],
    image_scores: np.ndarray | None = None,
    prevalence: float = REAL_PREVALENCE,
) -> dict[str, float]:
    """Every metric of the project for a set of images.

    Args:
        truths, preds: per-image binary masks (same shapes pairwise).
        image_scores: image-level probability per image (for AUC); when
            ``None`` the AUC is left out.
        prevalence: positive share used for the re-weighted SIIM score.

    Returns:
        dict with ``siim_score``, ``siim_score_reweighted``, ``dice_positive``,
        ``empty_accuracy``, ``iou``, ``sensitivity``, ``specificity``, ``auc``
        and counts.
    """
    dices = np.array([dice(t, p) for t, p in zip(truths, preds)])
    ious = np.array([iou(t, p) for t, p in zip(truths, preds)])
    labels = np.array([t.any() for t in truths])
    predicted = np.array([p.any() for p in preds])
    pos, neg = dices[labels], dices[~labels]
    out = {
        "n_images": int(len(dices)),
        "n_positive": int(labels.sum()),
        "n_negative": int((~labels).sum()),
        "siim_score": float(dices.mean()) if len(dices) else float("nan"),
        "dice_positive": float(pos.mean()) if len(pos) else float("nan"),
        "empty_accuracy": float(neg.mean()) if len(neg) else float("nan"),
        "iou": float(ious.mean()) if len(ious) else float("nan"),
    }
    out["siim_score_reweighted"] = (
        prevalence * out["dice_positive"] + (1 - prevalence) * out["empty_accuracy"]
    )
    out["sensitivity"], out["specificity"] = sensitivity_specificity(labels, predicted)
    if image_scores is not None:
        out["auc"] = roc_auc(labels, image_scores)
    return out
