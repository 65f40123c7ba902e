"""Augmentation of one model-size image and its mask (numpy + OpenCV)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pneumo.io.encodings import jpeg_roundtrip, resample_roundtrip
from pneumo.training.config import Augment


def augment_pair(
    x: np.ndarray, y: np.ndarray, aug: Augment, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one image and its 0/1 mask (both ``uint8`` size x size).

    Returns:
        ``(float32 image in [0, 1], float32 0/1 mask)``: the image is ready for
        :func:`pneumo.inference.preprocess.model_input`.
    """
    size = x.shape[0]
    if rng.random() < aug.hflip:
        x, y = x[:, ::-1], y[:, ::-1]
    angle = rng.uniform(-aug.rotate_deg, aug.rotate_deg)
    scale = 1.0 + rng.uniform(-aug.scale, aug.scale)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += rng.uniform(-aug.shift, aug.shift, 2) * size
    x = cv2.warpAffine(
        np.ascontiguousarray(x),
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    y = cv2.warpAffine(
        np.ascontiguousarray(y),
        m,
        (size, size),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    if aug.grid_distort > 0:
        x, y = grid_distort(x, y, aug.grid_distort, rng)
    return photometric(x, aug, rng), y.astype(np.float32)


def photometric(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness and gamma on a ``uint8`` image; ``float32`` in [0, 1] out."""
    xf = x.astype(np.float32) / 255.0
    xf = xf * (1.0 + rng.uniform(-aug.contrast, aug.contrast)) + rng.uniform(
        -aug.brightness, aug.brightness
    )
    return (np.clip(xf, 0.0, 1.0) ** math.exp(rng.uniform(-aug.gamma, aug.gamma))).astype(
        np.float32
    )


def grid_distort(
    x: np.ndarray, y: np.ndarray, strength: float, rng: np.random.Generator, cells: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth elastic warp: a jittered ``cells`` x ``cells`` grid, fixed border."""
    size = x.shape[0]
    knots = np.linspace(0, size - 1, cells + 1)
    jitter = rng.uniform(-strength, strength, (2, cells + 1, cells + 1)) * size / cells
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0
    gx, gy = np.meshgrid(knots, knots)
    map_x = cv2.resize(
        (gx + jitter[0]).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    map_y = cv2.resize(
        (gy + jitter[1]).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    x = cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    y = cv2.remap(y, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return x, y


def encode_augment(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """What storing the film differently would do, at its own resolution.

    In order: a lower-resolution round trip, blur or sharpening, sensor-like
    noise, then a JPEG round trip at a random quality (last, as a file is
    written last). Applied to both classes with the same probabilities, so
    the artefacts no longer predict the label.

    Args:
        x: ``uint8`` (rows, columns) display pixels at the file's resolution.

    Returns:
        ``uint8`` array of the same shape.
    """
    if rng.random() < aug.resample:
        x = resample_roundtrip(x, float(rng.uniform(*aug.resample_range)))
    if rng.random() < aug.blur:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.3, 1.2)))
    elif rng.random() < aug.sharpen:
        soft = cv2.GaussianBlur(x, (0, 0), 1.0).astype(np.float32)
        x = np.clip(x + rng.uniform(0.3, 1.0) * (x - soft), 0, 255).astype(np.uint8)
    if rng.random() < aug.noise:
        noisy = x + rng.normal(0.0, rng.uniform(1.0, 4.0), x.shape).astype(np.float32)
        x = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if rng.random() < aug.jpeg:
        x = jpeg_roundtrip(
            np.ascontiguousarray(x), int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1))
        )
    return x
