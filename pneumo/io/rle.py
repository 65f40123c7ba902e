"""SIIM-ACR run-length encoding of binary masks, and the ground-truth CSV.

SIIM's "relative" RLE lists pairs ``(offset, length)`` over the mask flattened
in **column-major** order (x outer, y inner): ``offset`` counts pixels from the
end of the previous run (from pixel 0 for the first run). ``-1`` (or an empty
string) means an empty mask. An image with several annotations has several
rows in the CSV; they are merged with logical OR.

The "absolute" variant used by most other Kaggle segmentation contests writes
1-based absolute start positions over the same column-major order.

All functions are vectorised with numpy; masks are ``bool`` arrays of shape
(height, width).
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Iterable

import numpy as np

from pneumo.errors import RLEError

EMPTY = "-1"
SIIM_SHAPE = (1024, 1024)


def _parse_numbers(rle: str) -> np.ndarray:
    text = (rle or "").strip()
    if text in ("", EMPTY):
        return np.zeros(0, dtype=np.int64)
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except ValueError as exc:
        raise RLEError(f"RLE contains a value that is not an integer: {text[:40]!r}") from exc
    if numbers.size % 2:
        raise RLEError(f"RLE has an odd number of values ({numbers.size}); it must hold pairs.")
    if (numbers < 0).any():
        raise RLEError("RLE contains a negative offset or length.")
    return numbers


def _runs_to_mask(starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    total = height * width
    ends = starts + lengths
    if starts.size and (starts.min() < 0 or ends.max() > total):
        raise RLEError(f"RLE runs reach pixel {int(ends.max())}, outside a {height}x{width} mask.")
    marks = np.zeros(total + 1, dtype=np.int32)
    np.add.at(marks, starts, 1)
    np.add.at(marks, ends, -1)
    flat = np.cumsum(marks[:-1]) > 0
    return flat.reshape(width, height).T


def decode(rle: str, shape: tuple[int, int] = SIIM_SHAPE) -> np.ndarray:
    """Decode one SIIM relative RLE string to a bool mask of ``shape`` (height, width)."""
    numbers = _parse_numbers(rle)
    offsets, lengths = numbers[0::2], numbers[1::2]
    starts = np.cumsum(offsets) + np.cumsum(lengths) - lengths
    return _runs_to_mask(starts, lengths, shape)


def _mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return absolute 0-based (starts, lengths) of runs in column-major order."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RLEError(f"Mask must be 2-D (height, width), got shape {mask.shape}.")
    flat = np.concatenate([[False], mask.T.reshape(-1).astype(bool), [False]])
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = changes[0::2], changes[1::2]
    return starts, ends - starts


def encode(mask: np.ndarray) -> str:
    """Encode a mask (any dtype; non-zero = foreground) as SIIM relative RLE; ``-1`` if empty."""
    starts, lengths = _mask_runs(mask)
    if starts.size == 0:
        return EMPTY
    prev_ends = np.concatenate([[0], starts[:-1] + lengths[:-1]])
    pairs = np.stack([starts - prev_ends, lengths], axis=1).reshape(-1)
    return " ".join(map(str, pairs.tolist()))


def decode_absolute(rle: str, shape: tuple[int, int] = SIIM_SHAPE) -> np.ndarray:
    """Decode absolute RLE (1-based starts, column-major) to a bool mask."""
    numbers = _parse_numbers(rle)
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    return _runs_to_mask(starts, lengths, shape)


def encode_absolute(mask: np.ndarray) -> str:
    """Encode a mask as absolute RLE (1-based starts, column-major); ``-1`` if empty."""
    starts, lengths = _mask_runs(mask)
    if starts.size == 0:
        return EMPTY
    return " ".join(map(str, np.stack([starts + 1, lengths], axis=1).reshape(-1).tolist()))


def merge(rles: Iterable[str], shape: tuple[int, int] = SIIM_SHAPE) -> np.ndarray:
    """OR together the masks of several RLE rows of one image."""
    mask = np.zeros(shape, dtype=bool)
    for rle in rles:
        mask |= decode(rle, shape)
    return mask


def read_rle_csv(path: str | Path) -> dict[str, list[str]]:
    """Read a SIIM ground-truth CSV (plain or ``.gz``) into ``{ImageId: [rle, ...]}``.

    Accepts ``ImageId,EncodedPixels`` and the ``ImageId, EncodedPixels``
    spelling (leading space), and also header-less two-column files such as
    Kaggle's ``train-rle-sample.csv``. Empty images map to ``["-1"]``.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    if not rows:
        return {}
    header = [c.strip().lower() for c in rows[0]]
    if "imageid" in header:
        id_col, rle_col = header.index("imageid"), header.index("encodedpixels")
        rows = rows[1:]
    else:
        id_col, rle_col = 0, 1
    table: dict[str, list[str]] = {}
    for row in rows:
        if len(row) <= max(id_col, rle_col):
            continue
        table.setdefault(row[id_col].strip(), []).append(row[rle_col].strip())
    return table


def is_positive(rles: Iterable[str]) -> bool:
    """True when any RLE row of an image is non-empty."""
    return any(r.strip() not in ("", EMPTY) for r in rles)


def mask_for(
    table: dict[str, list[str]], image_id: str, shape: tuple[int, int] = SIIM_SHAPE
) -> np.ndarray:
    """Merged ground-truth mask of ``image_id`` at the SIIM 1024x1024 resolution."""
    if image_id not in table:
        raise KeyError(image_id)
    return merge(table[image_id], shape)
