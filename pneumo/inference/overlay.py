"""Overlay rendering: the X-ray with the mask filled in or outlined.

All functions are pure and return new ``uint8`` RGB arrays. Colours
are fixed (never rescaled to an image's own min/max), so an empty
prediction renders as an untouched X-ray.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Bright yellow-orange: visible on grey X-rays and to most colour-blind readers.
#: The result viewer draws its layers in these colours too (passed by the page).
MASK_COLOUR = (255, 170, 0)
CONTOUR_COLOUR = (255, 220, 0)
#: Opacity of the filled mask in the overlay PNG and the viewer's starting value.
DEFAULT_OPACITY = 0.4


def contour_width(shape: tuple[int, ...]) -> int:
    """Outline width in pixels: about 0.3 % of the image's longer side (the viewer's too)."""
    return max(1, round(max(shape[:2]) / 300))


def grey_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8."""
    return np.repeat(pixels[:, :, None], 3, axis=2)


def filled(
    pixels: np.ndarray,
    mask: np.ndarray,
    opacity: float = DEFAULT_OPACITY,
    colour: tuple[int, int, int] = MASK_COLOUR,
) -> np.ndarray:
    """Blend ``colour`` over the mask pixels with ``opacity`` in [0, 1]."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = grey_to_rgb(pixels).astype(np.float32)
    m = mask.astype(bool)
    rgb[m] = (1.0 - opacity) * rgb[m] + opacity * np.array(colour, np.float32)
    return np.round(rgb).astype(np.uint8)


def contour(
    pixels: np.ndarray,
    mask: np.ndarray,
    thickness: int | None = None,
    colour: tuple[int, int, int] = CONTOUR_COLOUR,
) -> np.ndarray:
    """Draw the mask outline; thickness defaults to ~0.3 % of the image side."""
    rgb = grey_to_rgb(pixels).copy()
    if not mask.any():
        return rgb
    thickness = thickness or contour_width(pixels.shape)
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(rgb, contours, -1, colour, thickness)
    return rgb


AI_LABEL = "AI output, not a diagnosis"


def burn_label(rgb: np.ndarray, text: str = AI_LABEL) -> np.ndarray:
    """Write ``text`` white on a black box in the bottom-left corner of an RGB image.

    The box's height is about 3 % of the image's (at least 12 pixels), so the
    label stays legible on a thumbnail and small on a full-size film.
    """
    img = Image.fromarray(np.ascontiguousarray(rgb, np.uint8))
    size = max(10, round(min(img.size) * 0.025))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    x0, y1 = pad, img.height - pad
    y0 = y1 - (bottom - top) - 2 * pad
    draw.rectangle((x0, y0, x0 + (right - left) + 2 * pad, y1), fill=(0, 0, 0))
    draw.text((x0 + pad - left, y0 + pad - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two RGB images of equal height next to each other with a black gap."""
    if left.ndim == 2:
        left = grey_to_rgb(left)
    if right.ndim == 2:
        right = grey_to_rgb(right)
    h = max(left.shape[0], right.shape[0])
    canvas = np.zeros((h, left.shape[1] + gap + right.shape[1], 3), np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    return canvas
