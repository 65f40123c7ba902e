"""The same film in other file encodings: for invariance checks and training.

A verdict must depend on the chest, not on how the file was stored. This
module writes decoded display pixels back out as real files in the encodings
a hospital or a data set produces (lossless PNG, JPEG at several qualities,
a 2x downscale, a 2x bicubic upscale, DICOM with JPEG Baseline or uncompressed
pixels, 16-bit DICOM that the reader must window, at the film's size and at a
CR/DX film's 2,500 px), so that they travel through the same reader as
an upload (:func:`pneumo.io.imaging.read_image`).

:func:`jpeg_roundtrip` and :func:`resample_roundtrip` are the in-memory forms
that training augmentation applies at the image's own resolution.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

#: Every encoding :func:`encode` writes, in the order reports list them.
ENCODINGS = (
    "png",
    "jpeg95",
    "jpeg75",
    "jpeg50",
    "downscale2x",
    "upscale2x",
    "dicom_jpeg",
    "dicom_raw",
    "dicom16",
    "dicom16_2500",
)

#: The long side of the ``dicom16_2500`` encoding: a CR/DX film's native size.
DR_SIDE = 2500


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")


def jpeg_bytes(pixels: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG (8-bit grey) of ``pixels`` at ``quality`` (1-100)."""
    _check_pixels(pixels)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def png_bytes(pixels: np.ndarray) -> bytes:
    """Lossless 8-bit grey PNG of ``pixels``."""
    _check_pixels(pixels)
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """``pixels`` as a JPEG at ``quality`` would decode (same shape, ``uint8``)."""
    data = np.frombuffer(jpeg_bytes(pixels, quality), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def downscale(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (0 < factor <= 1) with area interpolation."""
    _check_pixels(pixels)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"downscale factor must be in (0, 1], got {factor}")
    rows, cols = pixels.shape
    size = (max(1, round(cols * factor)), max(1, round(rows * factor)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def upscale(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Enlarge by ``factor`` (>= 1) with bicubic interpolation (a film scanned finer)."""
    _check_pixels(pixels)
    if factor < 1.0:
        raise ValueError(f"upscale factor must be at least 1, got {factor}")
    rows, cols = pixels.shape
    return cv2.resize(
        pixels, (round(cols * factor), round(rows * factor)), interpolation=cv2.INTER_CUBIC
    )


def resample_roundtrip(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Down by ``factor`` and back up to the original shape (a lower-resolution film)."""
    small = downscale(pixels, factor)
    return cv2.resize(small, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)


def _dicom(
    pixels: np.ndarray,
    transfer_syntax,
    pixel_data: bytes,
    bits: int,
    window: tuple[float, float] | None,
) -> bytes:
    """A minimal Secondary Capture DICOM holding one grey frame."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", "PA", "CHEST"
    ds.PatientName, ds.PatientID = "ANON^ENCODING", "ENCODING"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixel_data
    if meta.TransferSyntaxUID.is_compressed:
        ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def dicom16_values(pixels: np.ndarray) -> np.ndarray:
    """12-bit stored values whose DICOM window (:data:`DICOM16_WINDOW`) gives ``pixels`` back."""
    return pixels.astype(np.uint16) * 16 + 8


#: Window centre and width that map :func:`dicom16_values` back onto 0-255.
DICOM16_WINDOW = (2048.0, 4096.0)


def encode(pixels: np.ndarray, name: str) -> tuple[bytes, str]:
    """Write display pixels as a file in the encoding ``name``.

    Args:
        pixels: ``uint8`` (rows, columns), air dark, as :func:`read_image` returns.
        name: one of :data:`ENCODINGS`.

    Returns:
        ``(file bytes, file suffix)``.
    """
    _check_pixels(pixels)
    if name == "png":
        return png_bytes(pixels), ".png"
    if name.startswith("jpeg") and name[4:].isdigit():
        return jpeg_bytes(pixels, int(name[4:])), ".jpg"
    if name == "downscale2x":
        return png_bytes(downscale(pixels, 0.5)), ".png"
    if name == "upscale2x":
        return png_bytes(upscale(pixels, 2.0)), ".png"
    if name == "dicom_jpeg":
        frame = jpeg_bytes(pixels, 90)
        return _dicom(pixels, JPEGBaseline8Bit, encapsulate([frame]), 8, None), ".dcm"
    if name == "dicom_raw":
        return _dicom(pixels, ExplicitVRLittleEndian, pixels.tobytes(), 8, None), ".dcm"
    if name in ("dicom16", "dicom16_2500"):
        if name == "dicom16_2500":  # a CR/DX-sized film: the long side DR_SIDE px, bicubic
            pixels = upscale(pixels, DR_SIDE / max(pixels.shape))
        values = dicom16_values(pixels)
        return _dicom(
            pixels, ExplicitVRLittleEndian, values.astype("<u2").tobytes(), 12, DICOM16_WINDOW
        ), ".dcm"
    raise ValueError(f"unknown encoding {name!r}; choose one of {list(ENCODINGS)}")
