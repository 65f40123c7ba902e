"""Images that are not frontal chest radiographs, for fitting and testing the chest gate.

Three kinds, each split into a ``fit`` part and a ``held_out`` part so the
gate's catch rate is measured on images it was not fitted on:

* ``skimage``: the sample images scikit-image ships (photographs, micrographs,
  text, a phantom), read back through the upload reader as PNG files, so
  colour ones keep their colour (alternate images go to each part);
* ``dicom``: pydicom's test files that the reader can decode (CT, MR, NM, US,
  an extremity radiograph, ...), except the chest radiographs among them;
* ``synthetic``: stripes, checkerboards, gradients, noise, blobs, shapes and
  text drawn with a seeded generator (different seeds per part).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_files

from pneumo.errors import PneumoError
from pneumo.io.imaging import ImageRecord, read_image

PARTS = ("fit", "held_out")
_SKIMAGE = (
    "astronaut",
    "binary_blobs",
    "brick",
    "camera",
    "cat",
    "cell",
    "checkerboard",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
)


@dataclass(frozen=True)
class Example:
    """One non-chest image as the upload reader returns it."""

    kind: str
    name: str
    record: ImageRecord


def _png_record(arr: np.ndarray) -> ImageRecord:
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return read_image(buf.getvalue())


def skimage_examples(part: str) -> list[Example]:
    """scikit-image's sample images (every other one per part)."""
    from skimage import data  # lazy: the train extra's, absent from the serving image

    out = []
    for i, name in enumerate(_SKIMAGE):
        if (i % 2 == 0) != (part == "fit"):
            continue
        out.append(Example("skimage", name, _png_record(np.asarray(getattr(data, name)()))))
    return out


def dicom_examples(part: str) -> list[Example]:
    """pydicom's decodable test files that are not chest radiographs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = sorted(get_testdata_files("*.dcm"))
    out = []
    for path in files:
        try:
            record = read_image(path)
        except PneumoError:
            continue
        if (record.meta.body_part or "").upper() == "CHEST" or min(record.pixels.shape) < 16:
            continue
        out.append(Example("dicom", path.rsplit("/", 1)[-1], record))
    return [e for i, e in enumerate(out) if (i % 2 == 0) == (part == "fit")]


def _pattern(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if kind == "stripes":
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 60)
        v = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        return 127.5 + 127.5 * (np.sign(v) if rng.random() < 0.5 else v)
    if kind == "checker":
        n = int(rng.integers(2, 40))
        return ((np.floor(xx * n) + np.floor(yy * n)) % 2) * 255.0
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        v = xx * np.cos(angle) + yy * np.sin(angle)
        return 255 * (v - v.min()) / (np.ptp(v) + 1e-9)
    if kind == "radial":
        r = np.hypot(xx - rng.uniform(0.2, 0.8), yy - rng.uniform(0.2, 0.8))
        return 255 * (1 - r / r.max()) ** rng.uniform(0.5, 3)
    if kind == "noise":
        return rng.uniform(0, 255, (size, size))
    if kind == "blobs":
        v = cv2.GaussianBlur(rng.normal(size=(size, size)), (0, 0), rng.uniform(2, size / 8))
        return 255 * (v - v.min()) / (np.ptp(v) + 1e-9)
    if kind == "uniform":
        return np.full((size, size), rng.uniform(0, 255)) + rng.normal(0, 2, (size, size))
    img = np.full((size, size), int(rng.integers(0, 256)), np.uint8)
    for _ in range(int(rng.integers(3, 15))):
        colour = int(rng.integers(0, 256))
        if kind == "shapes":
            c = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.circle(img, c, int(rng.integers(5, size // 3)), colour, -1)
        else:  # text
            org = (int(rng.integers(0, size // 2)), int(rng.integers(20, size)))
            cv2.putText(
                img,
                "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), 8)),
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                rng.uniform(0.5, 3),
                colour,
                2,
            )
    return img.astype(np.float64)


SYNTHETIC_KINDS = (
    "stripes",
    "checker",
    "gradient",
    "radial",
    "noise",
    "blobs",
    "uniform",
    "shapes",
    "text",
)


def synthetic_examples(part: str, per_kind: int = 12) -> list[Example]:
    """Seeded synthetic patterns (the two parts use different seeds)."""
    rng = np.random.default_rng(101 if part == "fit" else 202)
    out = []
    for kind in SYNTHETIC_KINDS:
        for i in range(per_kind):
            size = int(rng.choice([256, 384, 512]))
            pixels = np.clip(_pattern(kind, rng, size), 0, 255).astype(np.uint8)
            out.append(Example("synthetic", f"{kind}_{i}", _png_record(pixels)))
    return out


def non_chest_examples(part: str) -> list[Example]:
    """All three kinds for ``part`` (``fit`` or ``held_out``)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return skimage_examples(part) + dicom_examples(part) + synthetic_examples(part)
