"""The one path from decoded pixels to model input.

Two steps, both used by training, evaluation, serving and the benchmarks:

1. :func:`model_image` - display pixels (any size, ``uint8``) to the model's
   square size, still ``uint8``: first the canonical working resolution
   (:func:`to_working`: every film, whatever its pixel size, becomes
   ``working_size`` x ``working_size``), then the canonical JPEG step at that
   resolution (:func:`canonical`), then :func:`resize_image` to the network's
   size. Training caches this form, the server and ``pneumo predict`` batch it.
2. :func:`model_input` - a batch of those images (``uint8``, or ``float32``
   in [0, 1] after photometric augmentation) to the network's input: the
   normalisation and channel layout the model card names.

Training targets follow the image through :func:`resize_target_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pneumo.io.encodings import jpeg_roundtrip

# How [0, 1] grey values become network input, per channel (all channels equal: grey).
# "unit": the value itself (networks trained from scratch).
# "efficientnet_lite": (255 v - 127) / 128, the convention of the EfficientNet-Lite
#   ImageNet checkpoints (TensorFlow's lite models; the PyTorch port keeps it).
# "caffe": 255 v minus the ImageNet channel mean in BGR order (Keras VGG16/VGG19).
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
NORMALISATIONS = ("unit", "efficientnet_lite", "caffe")


@dataclass(frozen=True)
class PreprocessConfig:
    """How pixels become model input. Stored in every model card.

    Attributes:
        size: square side of the network input.
        channels: 1 (grey) or 3 (grey repeated, for ImageNet-pretrained encoders).
        normalisation: one of :data:`NORMALISATIONS`.
    """

    size: int = 256
    channels: int = 1
    normalisation: str = "unit"
    jpeg_quality: int | None = None  # canonical JPEG round trip (at the working resolution)
    working_size: int | None = None  # canonical working resolution every input reaches first
    jpeg_offsets: int = 1  # JPEG round trips averaged, block grid moved (GRID_OFFSETS)

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"preprocess size must be a positive integer, got {self.size!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"preprocess channels must be 1 or 3, got {self.channels!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"unknown normalisation {self.normalisation!r}; "
                f"choose one of {list(NORMALISATIONS)}"
            )
        if self.normalisation == "caffe" and self.channels != 3:
            raise ValueError("the caffe normalisation needs channels=3")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(
                f"preprocess jpeg_quality must be in 1..100, got {self.jpeg_quality!r}"
            )
        if self.jpeg_offsets not in (1, 2, 4):
            raise ValueError(
                f"preprocess jpeg_offsets must be 1, 2 or 4, got {self.jpeg_offsets!r}"
            )
        if self.jpeg_offsets != 1 and self.jpeg_quality is None:
            raise ValueError("preprocess jpeg_offsets needs a jpeg_quality")
        if self.working_size is not None and (
            not isinstance(self.working_size, int) or self.working_size < self.size
        ):
            raise ValueError(
                "preprocess working_size must be an integer of at least the input "
                f"size {self.size}, got {self.working_size!r}"
            )

    def to_dict(self) -> dict:
        d = {"size": self.size, "channels": self.channels, "normalisation": self.normalisation}
        if self.jpeg_quality is not None:
            d["jpeg_quality"] = self.jpeg_quality
        if self.working_size is not None:
            d["working_size"] = self.working_size
        if self.jpeg_offsets != 1:
            d["jpeg_offsets"] = self.jpeg_offsets
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        q, w = d.get("jpeg_quality"), d.get("working_size")
        return cls(
            size=int(d["size"]),
            channels=int(d.get("channels", 1)),
            normalisation=str(d.get("normalisation", "unit")),
            jpeg_quality=None if q is None else int(q),
            working_size=None if w is None else int(w),
            jpeg_offsets=int(d.get("jpeg_offsets", 1)),
        )

    def describe(self) -> str:
        """One line for model cards."""
        norm = {
            "unit": "v (grey value scaled to [0, 1])",
            "efficientnet_lite": "(255 v - 127) / 128",
            "caffe": "255 v minus the ImageNet BGR mean",
        }[self.normalisation]
        where = "its own resolution" if self.working_size is None else "that resolution"
        work = (
            ""
            if self.working_size is None
            else (
                f"brought to the canonical working resolution {self.working_size} x "
                f"{self.working_size} (`cv2.INTER_AREA` when larger, bilinear when smaller, so the "
                "film's pixel size carries no information), then "
            )
        )
        canon = (
            ""
            if self.jpeg_quality is None
            else (
                f"stored once more as JPEG quality {self.jpeg_quality} at {where} (a "
                "canonical encoding, so the file's own compression matters less)"
                + (
                    ""
                    if self.jpeg_offsets == 1
                    else f", averaged over {self.jpeg_offsets} round trips with the 8 x 8 block "
                    "grid moved by 0 or 4 px"
                )
                + ", then "
            )
        )
        return (
            f"grey image {work}{canon}resized to {self.size} x {self.size} in uint8"
            " (`cv2.INTER_AREA` when shrinking),"
            f" {self.channels} channel(s), each channel = {norm}"
        )


def resize_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize display pixels to the model's square size, keeping ``uint8``.

    Args:
        pixels: ``uint8`` array (rows, columns), air dark (from ``read_image``).
        size: target side.

    Returns:
        ``uint8`` array (size, size): area interpolation when shrinking,
        bilinear when enlarging.
    """
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D (rows, columns), got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.shape == (size, size):
        return pixels
    interp = cv2.INTER_AREA if min(pixels.shape) >= size else cv2.INTER_LINEAR
    return cv2.resize(pixels, (size, size), interpolation=interp)


def to_working(pixels: np.ndarray, working_size: int | None) -> np.ndarray:
    """The canonical working resolution: every film becomes ``working_size`` squared.

    Larger films are area-averaged (``cv2.INTER_AREA``), so a 1024² film and its
    ``INTER_AREA`` 512² copy arrive as the same array; smaller films (rare: under
    ``working_size`` on a side) are enlarged bilinearly and so reach the network
    softer than a native film, never sharper. ``None``: the film's own size.
    """
    if working_size is None or pixels.shape == (working_size, working_size):
        return pixels
    return resize_image(pixels, working_size)


def enlarged_note(shape: tuple[int, int], config: PreprocessConfig) -> str | None:
    """What a reader should know about a film smaller than the working resolution.

    Such a film (under ``working_size`` on either side) is enlarged by :func:`to_working`,
    so a pleural line reaches the network softer than in a full-size film and the reading
    tends lower. ``None`` for films at or above the working resolution and for models
    without one.
    """
    rows, columns = (int(v) for v in shape[:2])
    w = config.working_size
    if w is None or min(rows, columns) >= w:
        return None
    return (
        f"This film is {columns} x {rows} px, smaller than the model's working resolution "
        f"of {w} x {w} px: it was enlarged before reading, so fine detail such as a pleural "
        "line is softer than in a full-size film and the verdict is less reliable (it tends "
        "lower). Read the full-size film where one exists."
    )


#: Where the 8 x 8 JPEG block grid starts (rows, columns down and across) for each of the
#: averaged round trips of :func:`canonical`; the first ``offsets`` are used.
GRID_OFFSETS = ((0, 0), (4, 4), (0, 4), (4, 0))


def canonical(pixels: np.ndarray, jpeg_quality: int | None, offsets: int = 1) -> np.ndarray:
    """The canonical encoding step: a JPEG round trip at ``jpeg_quality`` (``None``: none).

    Every input then carries at least this level of JPEG artefacts, whatever
    its file held: a lossless film and a JPEG of the same film reach the
    network much closer to each other. With ``offsets`` 2 or 4 the round trip is
    done that many times with the block grid moved (:data:`GRID_OFFSETS`; the film is
    padded by reflection before and cropped after) and the results averaged, so where
    the blocks fall, which a small change of the film moves, matters less.
    """
    if jpeg_quality is None:
        return pixels
    if offsets == 1:
        return jpeg_roundtrip(np.ascontiguousarray(pixels), int(jpeg_quality))
    total = np.zeros(pixels.shape, np.float32)
    for dy, dx in GRID_OFFSETS[:offsets]:
        padded = np.pad(pixels, ((dy, 0), (dx, 0)), mode="reflect") if dy or dx else pixels
        total += jpeg_roundtrip(np.ascontiguousarray(padded), int(jpeg_quality))[dy:, dx:]
    return np.clip(np.rint(total / offsets), 0, 255).astype(np.uint8)


def model_image(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Display pixels (any size, ``uint8``) to the model-size ``uint8`` image the card asks for:
    :func:`to_working`, :func:`canonical`, then :func:`resize_image`."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be 2-D uint8, got {pixels.dtype} {pixels.shape}")
    working = to_working(pixels, config.working_size)
    return resize_image(canonical(working, config.jpeg_quality, config.jpeg_offsets), config.size)


def model_input(images: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Turn a batch of model-size grey images into network input.

    Args:
        images: (N, size, size) ``uint8`` (from :func:`resize_image`), or
            ``float32`` in [0, 1] (the same after photometric augmentation).
        config: channels and normalisation from the model card.

    Returns:
        ``float32`` (N, size, size, channels).
    """
    if images.ndim != 3 or images.shape[1:] != (config.size, config.size):
        raise ValueError(f"images must be (N, {config.size}, {config.size}), got {images.shape}")
    v = (
        images.astype(np.float32) / 255.0
        if images.dtype == np.uint8
        else np.asarray(images, np.float32)
    )
    v = v[..., None]
    if config.normalisation == "efficientnet_lite":
        v = (v * 255.0 - 127.0) / 128.0
    elif config.normalisation == "caffe":
        return v * 255.0 - _CAFFE_MEAN_BGR
    return np.repeat(v, config.channels, axis=-1) if config.channels > 1 else v


def resize_target_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A training target: bool/0-1 mask (H, W) to ``uint8`` 0/1 (size, size).

    Area interpolation then a 0.5 cut, so a pixel is foreground when at least
    half of the original pixels it covers are.
    """
    m = mask.astype(np.float32)
    if m.shape != (size, size):
        interp = cv2.INTER_AREA if min(m.shape) >= size else cv2.INTER_LINEAR
        m = cv2.resize(m, (size, size), interpolation=interp)
    return (m > 0.5).astype(np.uint8)
