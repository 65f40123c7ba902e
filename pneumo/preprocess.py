"""The one preprocessing path from decoded pixels to model input.

Training, evaluation and serving all call :func:`preprocess`; masks follow
the image through :func:`resize_mask`, and model output goes back to the
original resolution through :func:`resize_probability`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    """How pixels become model input. Stored in every model card."""

    size: int = 256
    channels: int = 1

    def to_dict(self) -> dict:
        return {"size": self.size, "channels": self.channels, "scale": "uint8/255",
                "resize": "cv2.INTER_AREA"}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(size=int(d["size"]), channels=int(d.get("channels", 1)))


def preprocess(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Turn display pixels into one model input.

    Args:
        pixels: ``uint8`` array (rows, columns), air dark (from ``read_image``).
        config: target size and channel count.

    Returns:
        ``float32`` array (size, size, channels) with values in [0, 1].
    """
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D (rows, columns), got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    size = config.size
    if pixels.shape != (size, size):
        interp = cv2.INTER_AREA if min(pixels.shape) >= size else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (size, size), interpolation=interp)
    x = pixels.astype(np.float32) / 255.0
    return np.repeat(x[:, :, None], config.channels, axis=2)


def preprocess_uint8(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """:func:`preprocess` as compact ``uint8`` (size, size): one grey channel, values x 255.

    Lossless: ``preprocess`` divides ``uint8`` values by 255, so rounding back
    gives the same numbers. Training caches this form and inference batches
    it; ``pneumo.inference.predict_arrays`` turns it into model input.
    """
    x = preprocess(pixels, PreprocessConfig(config.size, 1))[..., 0]
    return np.round(x * 255.0).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a bool/0-1 mask (H, W) to a ``float32`` (size, size, 1) target in [0, 1]."""
    m = mask.astype(np.float32)
    if m.shape != (size, size):
        interp = cv2.INTER_AREA if min(m.shape) >= size else cv2.INTER_LINEAR
        m = cv2.resize(m, (size, size), interpolation=interp)
    return np.clip(m, 0.0, 1.0)[:, :, None]


def resize_probability(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a (size, size) probability map to ``shape`` (rows, columns), bilinear."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(shape):
        return prob
    return cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
