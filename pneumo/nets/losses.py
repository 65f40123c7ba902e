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


@keras.saving.register_keras_serializable(package="pneumo")
def dice_coef(y_true, y_pred):
    """Hard Dice at 0.5 for progress display (both empty counts 1)."""
    t = _flat(y_true) > 0.5
    p = _flat(y_pred) > 0.5
    t, p = ops.cast(t, "float32"), ops.cast(p, "float32")
    inter = ops.sum(t * p, axis=1)
    denom = ops.sum(t, axis=1) + ops.sum(p, axis=1)
    return ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)
