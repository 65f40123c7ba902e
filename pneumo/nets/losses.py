"""Segmentation losses in ``keras.ops`` (any backend).

All take ``y_true`` and ``y_pred`` of shape (N, H, W, 1) with probabilities
in [0, 1] and return one loss value per image (Keras averages them).
"""

from __future__ import annotations

import keras
from keras import ops

EPS = 1e-6


def _flat(y):
    return ops.reshape(ops.cast(y, "float32"), (ops.shape(y)[0], -1))


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - soft Dice per image; an empty truth with an empty prediction costs ~0."""
    t, p = _flat(y_true), _flat(y_pred)
    inter = ops.sum(t * p, axis=1)
    denom = ops.sum(t, axis=1) + ops.sum(p, axis=1)
    return 1.0 - (2.0 * inter + smooth) / (denom + smooth)


def bce(y_true, y_pred):
    """Mean binary cross-entropy per image."""
    t, p = _flat(y_true), ops.clip(_flat(y_pred), EPS, 1.0 - EPS)
    return -ops.mean(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p), axis=1)


def weighted_bce(y_true, y_pred, pos_weight: float = 10.0):
    """BCE with foreground pixels weighted ``pos_weight`` times, normalised by total weight.

    Pneumothorax covers ~1 % of an image; plain BCE is dominated by background.
    Normalising by the summed weights keeps the loss scale independent of mask size.
    """
    t, p = _flat(y_true), ops.clip(_flat(y_pred), EPS, 1.0 - EPS)
    w = 1.0 + (pos_weight - 1.0) * t
    ll = t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p)
    return -ops.sum(w * ll, axis=1) / ops.sum(w, axis=1)


def focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float = 0.75):
    """Binary focal loss (Lin et al. 2017) per image."""
    t, p = _flat(y_true), ops.clip(_flat(y_pred), EPS, 1.0 - EPS)
    pt = t * p + (1.0 - t) * (1.0 - p)
    a = t * alpha + (1.0 - t) * (1.0 - alpha)
    return -ops.mean(a * ops.power(1.0 - pt, gamma) * ops.log(pt), axis=1)


def image_bce(y_true, y_pred):
    """Binary cross-entropy of the image-level output (N, 1), one value per image."""
    t = ops.cast(ops.reshape(y_true, (-1,)), "float32")
    p = ops.clip(ops.cast(ops.reshape(y_pred, (-1,)), "float32"), EPS, 1.0 - EPS)
    return -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))


def bce_dice(y_true, y_pred):
    """BCE + soft Dice per image (the default)."""
    return bce(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


def weighted_bce_dice(y_true, y_pred):
    return weighted_bce(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


def focal_dice(y_true, y_pred):
    return 10.0 * focal_loss(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


LOSSES = {
    "bce_dice": bce_dice,
    "weighted_bce_dice": weighted_bce_dice,
    "focal_dice": focal_dice,
    "bce": bce,
    "dice": soft_dice_loss,
    "weighted_bce": weighted_bce,
    "focal": focal_loss,
}


def get_loss(name: str):
    """Look a loss up by its config name."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


PAIR_CLIP = 0.01  # scores outside [0.01, 0.99] decide no verdict: their gaps are not counted


def _partner_logit_gap(score):
    """Squared logit gap between each odd image's ``score`` and its even partner's,
    with the partner held fixed (no gradient); 0 for the even images. Scores are
    clipped to [``PAIR_CLIP``, 1 - ``PAIR_CLIP``] first: 1e-6 against 1e-4 is a
    large logit gap but the same verdict.

    A consistency batch holds pairs: image ``2i`` as augmented, image ``2i + 1``
    the same film at another pixel size (:class:`pneumo.training.data.BalancedBatches`).
    The gradient moves only the resized view towards the original's reading.
    """
    s = ops.clip(ops.cast(score, "float32"), PAIR_CLIP, 1.0 - PAIR_CLIP)
    z = ops.log(s) - ops.log(1.0 - s)
    pairs = ops.reshape(z, (-1, 2))
    gap = pairs[:, 1] - ops.stop_gradient(pairs[:, 0])
    return ops.reshape(ops.stack([ops.zeros_like(gap), gap * gap], axis=1), (-1,))


def paired_image_loss(base, weight: float):
    """``base`` plus ``weight`` x the pair's squared logit gap of the image-level output."""

    def loss(y_true, y_pred):
        return base(y_true, y_pred) + weight * _partner_logit_gap(ops.reshape(y_pred, (-1,)))

    return loss


def paired_mask_loss(base, weight: float, evidence_fraction: float):
    """``base`` plus ``weight`` x the pair's squared logit gap of the mask evidence
    (the mean of each map's top ``evidence_fraction`` of pixels, the number the
    verdict reads)."""

    def loss(y_true, y_pred):
        pixels = int(y_pred.shape[1]) * int(y_pred.shape[2])  # static: maps are square
        k = max(1, int(round(evidence_fraction * pixels)))
        flat = _flat(y_pred)
        top = ops.mean(ops.top_k(flat, k, sorted=False)[0], axis=1)
        return base(y_true, y_pred) + weight * _partner_logit_gap(top)

    return loss


@keras.saving.register_keras_serializable(package="pneumo")
def dice_coef(y_true, y_pred):
    """Hard Dice at 0.5 for progress display (both empty counts 1)."""
    t = _flat(y_true) > 0.5
    p = _flat(y_pred) > 0.5
    t, p = ops.cast(t, "float32"), ops.cast(p, "float32")
    inter = ops.sum(t * p, axis=1)
    denom = ops.sum(t, axis=1) + ops.sum(p, axis=1)
    return ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)
