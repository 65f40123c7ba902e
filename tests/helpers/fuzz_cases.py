"""Mutations of real image files for the fuzz suite (used by tests/test_fuzz.py)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
from hypothesis import strategies as st
from PIL import Image

from conftest import SIIM


def seed_files() -> dict[str, bytes]:
    """Real inputs to mutate: SIIM DICOM, PNG and JPEG, plus pydicom's RLE/16-bit files."""
    from pydicom.data import get_testdata_file

    return {
        "siim.dcm": sorted(SIIM.glob("jayantc79/**/*.dcm"))[0].read_bytes(),
        "siim.png": sorted(SIIM.glob("ktlProject0/data/train/images/*.png"))[0].read_bytes(),
        "siim.jpg": sorted(SIIM.glob("amarshrma/Deployment/Images/*.jpg"))[0].read_bytes(),
        "rle.dcm": Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes(),
        "ct16.dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes(),
    }


DICOM_EDITS = [
    ("Rows", [0, 1, 65535]),
    ("Columns", [0, 65535]),
    ("BitsAllocated", [0, 1, 3, 64]),
    ("BitsStored", [0, 17, 40]),
    ("SamplesPerPixel", [0, 3, 4]),
    ("PhotometricInterpretation", ["", "RGB", "PALETTE COLOR", "GARBAGE"]),
    ("NumberOfFrames", [0, 2, 100000]),
    ("PixelRepresentation", [1, 7]),
    ("WindowWidth", [0, -5, 1e30]),
    ("WindowCenter", [1e30, -1e30]),
    ("RescaleSlope", [0, -1, 1e30]),
    ("PixelSpacing", [[0, 0], [-1, 2], [1e9, 1e9]]),
]


def edit_dicom(data: bytes, keyword: str, value) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        try:
            setattr(ds, keyword, value)
            buf = io.BytesIO()
            ds.save_as(buf)
        except Exception:  # noqa: BLE001 - pydicom refuses the value: keep the file as it was
            return data
    return buf.getvalue()


def nested_sequences(data: bytes, depth: int) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        inner = pydicom.Dataset()
        inner.CodeValue = "X"
        for _ in range(depth):
            outer = pydicom.Dataset()
            outer.ReferencedImageSequence = pydicom.Sequence([inner])
            inner = outer
        ds.ReferencedImageSequence = inner.ReferencedImageSequence
        buf = io.BytesIO()
        ds.save_as(buf)
    return buf.getvalue()


def png_with_dimensions(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares huge dimensions (CRC fixed), a decompression bomb."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_with_dimensions(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    i = out.find(b"\xff\xc0")
    if i < 0:
        return data
    out[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def mutate(data: bytes, name: str, kind: str, a: float, b: int, blob: bytes) -> bytes:
    """Apply one mutation; ``a`` in [0, 1] picks a position, ``b`` a size or count."""
    n = len(data)
    pos = int(a * max(n - 1, 0))
    if kind == "truncate":
        return data[:pos]
    if kind == "flip":
        out = bytearray(data)
        rng = np.random.default_rng(b)
        for p in rng.integers(0, n, size=1 + b % 16):
            out[p] ^= int(rng.integers(1, 256))
        return bytes(out)
    if kind == "insert":
        return data[:pos] + blob + data[pos:]
    if kind == "zero":
        return data[:pos] + b"\x00" * min(b, n - pos) + data[pos + b :]
    if kind == "duplicate":
        return data[:pos] + data[pos : pos + b] * 3 + data[pos:]
    if kind == "header" and name.endswith(".dcm"):
        keyword, values = DICOM_EDITS[b % len(DICOM_EDITS)]
        return edit_dicom(data, keyword, values[int(a * len(values)) % len(values)])
    if kind == "nested" and name.endswith(".dcm"):
        return nested_sequences(data, 1 + b % 64)
    if kind == "long_sequence" and name.endswith(".dcm"):
        # a Content Sequence of many empty items before the pixel data (Hardening III item 2)
        at = data.rfind(b"\xe0\x7f\x10\x00")
        items = (b"\xfe\xff\x00\xe0" + b"\x00" * 4) * (1000 + 100 * b)
        seq = (
            b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"
            + items
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
        return data[:at] + seq + data[at:] if at > 0 else data
    if kind == "no_preamble" and name.endswith(".dcm") and data[128:132] == b"DICM":
        return data[132:] if b % 2 else data[128:]
    if kind == "charset" and name.endswith(".dcm"):
        return edit_dicom(data, "SpecificCharacterSet", ["GARBAGE", "ISO_IR 999", ""][b % 3])
    if kind == "dimensions":
        w, h = [(0, 0), (100000, 100000), (1, 50_000_001), (65535, 65535)][b % 4]
        if name.endswith(".png"):
            return png_with_dimensions(w, h)
        if name.endswith(".jpg"):
            return jpeg_with_dimensions(data, min(w, 65535), min(h, 65535))
        return edit_dicom(data, "Rows", min(h, 65535))
    return data


KINDS = [
    "truncate",
    "flip",
    "insert",
    "zero",
    "duplicate",
    "header",
    "nested",
    "dimensions",
    "long_sequence",
    "no_preamble",
    "charset",
]


def cases(names: list[str]):
    """Hypothesis strategy of (file name, mutation kind, position, size, blob)."""
    return st.tuples(
        st.sampled_from(names),
        st.sampled_from(KINDS),
        st.floats(0, 1),
        st.integers(0, 10_000),
        st.binary(max_size=64),
    )
