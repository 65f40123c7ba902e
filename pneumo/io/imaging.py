"""Read chest X-rays (DICOM, PNG, JPEG) into display-ready greyscale pixels.

The single entry point is :func:`read_image`. It accepts a path, raw bytes or
a binary file object and returns an :class:`ImageRecord` whose ``pixels`` are
a ``uint8`` array of shape ``(rows, columns)`` where air is dark, ready for
:func:`pneumo.inference.preprocess.model_image` and for display.

Metadata is split in two records so PHI cannot be logged by accident:
:class:`DisplayMetadata` holds what may be shown or logged, and
:class:`Identifiers` holds patient name, ID, birth date and accession number
and hides them from ``repr``.

Every failure raises a subclass of :class:`pneumo.errors.PneumoError`.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from pneumo.errors import (
    CorruptImageError,
    PneumoError,
    ImageTooLargeError,
    UnsupportedDicomError,
    UnsupportedImageError,
)
from pneumo.io.dicomguard import read_dataset, reraise_interrupts
from pneumo.io.spacing import from_dataset as spacing_from_dataset

#: Default cap on rows x columns (a 7000 x 7000 detector is ~49 MP).
DEFAULT_MAX_PIXELS = 50_000_000
#: Longest side of an image (JPEG, and so the canonical JPEG step of preprocessing,
#: cannot encode a side over 65,500 pixels).
MAX_SIDE = 65_500
#: Shortest side of an image: a narrower strip is no radiograph (tests and thumbnails use
#: images a few dozen pixels wide, so the floor stays below those).
MIN_SIDE = 16
#: Most the long side may exceed the short one by (a full-spine or long-leg film is
#: about 1:4).
MAX_ASPECT = 16

Source = Union[str, os.PathLike, bytes, BinaryIO]


@dataclass(frozen=True)
class DisplayMetadata:
    """Fields that are safe to show, log and store beside a result."""

    format: str
    rows: int
    columns: int
    photometric_interpretation: str = "MONOCHROME2"
    bits_stored: int = 8
    transfer_syntax: str | None = None
    transfer_syntax_name: str | None = None
    modality: str | None = None
    view_position: str | None = None
    patient_orientation: tuple[str, ...] | None = None
    laterality: str | None = None
    body_part: str | None = None
    study_date: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None
    spacing_warning: str | None = None  # set when areas in cm² would mislead
    windowing: str = "none"
    chroma: float = 0.0  # mean colour saturation (0-255) of a raster image; 0 for grey

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        for key in ("patient_orientation", "pixel_spacing_mm"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d


@dataclass(frozen=True)
class Identifiers:
    """Patient-identifying fields and instance UIDs. Never log these.

    ``repr`` and ``str`` hide every value so an accidental log line or
    traceback cannot leak them.
    """

    patient_name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    accession_number: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return "Identifiers(<hidden>)"

    __str__ = __repr__

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageRecord:
    """Decoded image: ``pixels`` is ``uint8`` (rows, columns), air dark."""

    pixels: np.ndarray
    meta: DisplayMetadata
    identifiers: Identifiers = field(default_factory=Identifiers, repr=False)

    @property
    def image_id(self) -> str | None:
        """SOPInstanceUID for DICOM input (SIIM's ImageId), else ``None``."""
        return self.identifiers.sop_instance_uid


def read_image(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> ImageRecord:
    """Read a DICOM, PNG or JPEG chest X-ray.

    Args:
        source: path, raw bytes or a binary file object.
        max_pixels: refuse images whose declared rows x columns exceed this.
        name: optional name used only to word error messages (never logged).

    Returns:
        An :class:`ImageRecord` with ``uint8`` pixels of shape (rows, columns).

    Raises:
        UnsupportedImageError: not a DICOM, PNG or JPEG file.
        CorruptImageError: truncated or damaged data.
        UnsupportedDicomError: no pixel data, colour, multi-frame, no decoder;
            :class:`~pneumo.errors.DicomTooComplexError` for a DICOM whose structure is
            beyond the limits of :func:`pneumo.io.dicomguard.scan`.
        ImageTooLargeError: zero or absurd dimensions.
    """
    data = _read_bytes(source)
    if not data:
        raise CorruptImageError("The file is empty (0 bytes).")
    kind = sniff_format(data)
    try:
        if kind == "DICOM":
            return _read_dicom(data, max_pixels)
        if kind in ("PNG", "JPEG"):
            return _read_raster(data, kind, max_pixels)
    except PneumoError:
        raise
    except BaseException as exc:  # the last net: damaged files find odd corners of decoders
        reraise_interrupts(exc)
        raise CorruptImageError(
            f"The {kind} file could not be read; it is damaged or uses values this reader "
            "does not understand."
        ) from exc
    raise UnsupportedImageError(
        "This file is not a DICOM, PNG or JPEG image"
        + (f" ({Path(name).suffix or 'no extension'})" if name else "")
        + "."
    )


def declared_pixels(data: bytes) -> int | None:
    """Rows x columns a file declares, read from its header without decoding the pixels
    (``None`` when the header cannot be read or is refused: :func:`read_image` then says
    why). A DICOM header is read through :func:`pneumo.io.dicomguard.read_dataset`."""
    kind = sniff_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "DICOM":
                ds = read_dataset(data, stop_before_pixels=True)
                return int(ds.Rows) * int(ds.Columns) * max(1, int(ds.get("NumberOfFrames") or 1))
            if kind in ("PNG", "JPEG"):
                with Image.open(io.BytesIO(data)) as img:
                    return int(img.size[0]) * int(img.size[1])
    except Exception:  # noqa: BLE001 - any unreadable header: the reader reports it
        return None
    return None


def sniff_format(data: bytes) -> str | None:
    """Return ``"DICOM"``, ``"PNG"``, ``"JPEG"`` or ``None`` from magic bytes.

    DICOM files without the 128-byte preamble are recognised when they start
    with a group 0x0002 or 0x0008 tag in little-endian order.
    """
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if len(data) >= 8 and (
        data[:2] in (b"\x02\x00", b"\x08\x00") or data[:2] in (b"\x00\x02", b"\x00\x08")
    ):
        return "DICOM"  # a dataset written without preamble or file meta
    return None


def _read_bytes(source: Source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).read_bytes()
        except FileNotFoundError as exc:
            raise UnsupportedImageError(f"No such file: {Path(source).name}") from exc
        except IsADirectoryError as exc:
            raise UnsupportedImageError(f"{Path(source).name} is a folder, not an image") from exc
    return source.read()


# --------------------------------------------------------------------------- DICOM


def _read_dicom(data: bytes, max_pixels: int) -> ImageRecord:
    ds = read_dataset(data)
    _check_dicom_pixels(ds, max_pixels)
    tsyntax = _transfer_syntax(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr = ds.pixel_array
        except BaseException as exc:  # decoders raise many types, Rust plugins even panic
            reraise_interrupts(exc)
            raise CorruptImageError(
                "The DICOM pixel data could not be decoded "
                f"(transfer syntax {tsyntax.name if tsyntax else 'unknown'}); "
                "the file may be truncated or damaged."
            ) from exc
        expected = (int(ds.Rows), int(ds.Columns))
        if arr.shape != expected:
            raise CorruptImageError(
                f"Decoded pixel data has shape {arr.shape}, but Rows/Columns "
                f"(0028,0010)/(0028,0011) declare {expected}."
            )
        pixels, windowing = dicom_to_display(arr, ds)
        return ImageRecord(
            pixels=pixels,
            meta=_dicom_meta(ds, tsyntax, windowing),
            identifiers=_dicom_identifiers(ds),
        )


def _transfer_syntax(ds: pydicom.Dataset):
    with warnings.catch_warnings():  # an invalid UID is judged by the caller, not warned about
        warnings.simplefilter("ignore")
        uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        return None if uid is None else pydicom.uid.UID(str(uid))


def check_dimensions(rows: int, columns: int, max_pixels: int) -> None:
    """Refuse, before decoding, the declared sizes no radiograph has: zero, beyond
    ``max_pixels`` (decompression bombs), a side over :data:`MAX_SIDE` or under
    :data:`MIN_SIDE`, or one side more than :data:`MAX_ASPECT` times the other.

    Raises:
        ImageTooLargeError: naming the size and the limit it breaks.
    """
    if rows <= 0 or columns <= 0:
        raise ImageTooLargeError(f"The image has zero size: {rows} rows x {columns} columns.")
    if rows * columns > max_pixels:
        raise ImageTooLargeError(
            f"The image is too large: {rows} x {columns} pixels exceeds the limit of "
            f"{max_pixels:,} pixels."
        )
    if max(rows, columns) > MAX_SIDE:
        raise ImageTooLargeError(
            f"The image is {rows} x {columns} pixels: a side over {MAX_SIDE:,} pixels "
            "cannot be processed."
        )
    if min(rows, columns) < MIN_SIDE or max(rows, columns) > MAX_ASPECT * min(rows, columns):
        raise ImageTooLargeError(
            f"The image is {rows} x {columns} pixels: a strip this narrow is not a "
            f"radiograph (each side must be at least {MIN_SIDE} pixels and at most "
            f"{MAX_ASPECT} times the other)."
        )


def _check_dicom_pixels(ds: pydicom.Dataset, max_pixels: int) -> None:
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedDicomError("Float pixel data (7FE0,0008/0009) is not supported.")
        raise UnsupportedDicomError(
            "This DICOM has no image: Pixel Data (7FE0,0010) is missing "
            "(is it a report or structured document?)."
        )
    for keyword, tag in (("Rows", "(0028,0010)"), ("Columns", "(0028,0011)")):
        if keyword not in ds or ds[keyword].value in (None, ""):
            raise CorruptImageError(f"{keyword} {tag} is missing.")
    check_dimensions(int(ds.Rows), int(ds.Columns), max_pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedDicomError(
            f"Multi-frame DICOM (Number of Frames (0028,0008) = {frames}) is not supported; "
            "upload a single radiograph."
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedDicomError(
            f"Colour DICOM (Photometric Interpretation (0028,0004) = {photometric}, "
            f"Samples per Pixel {samples}) is not a greyscale radiograph."
        )
    tsyntax = _transfer_syntax(ds)
    if tsyntax is not None and not tsyntax.is_transfer_syntax:
        raise UnsupportedDicomError(
            f"Transfer Syntax UID (0002,0010) {str(tsyntax)[:64]!r} is not a known transfer syntax."
        )
    if tsyntax is not None and tsyntax.is_compressed:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError as exc:
            raise UnsupportedDicomError(
                f"Transfer syntax {tsyntax} ({tsyntax.name}) is not supported."
            ) from exc
        if not decoder.is_available:
            raise UnsupportedDicomError(
                f"No decoder is installed for transfer syntax {tsyntax} ({tsyntax.name})."
            )


def dicom_to_display(arr: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, str]:
    """Apply Modality LUT, VOI LUT/window (or a robust window) and MONOCHROME1 inversion.

    Args:
        arr: stored pixel values, shape (rows, columns).
        ds: the dataset the pixels came from.

    Returns:
        ``(uint8 pixels with air dark, name of the windowing used)``.
    """
    bits = int(ds.get("BitsStored", 8) or 8)
    rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    values = apply_modality_lut(arr, ds) if rescaled else arr
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        display = _to_uint8(out / float(2**lut_bits - 1))
        windowing = "voi_lut"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(_first(ds.WindowCenter))
        width = max(float(_first(ds.WindowWidth)), 1.0)
        display = to_display(values, lambda block: window(block, center, width))
        windowing = "window"
    elif bits <= 8 and not rescaled and arr.dtype == np.uint8:
        display = arr.copy()
        windowing = "none"
    else:
        lo, hi = percentile_range(values)
        display = to_display(values, lambda block: (block.astype(np.float64) - lo) / (hi - lo))
        windowing = "percentile"
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        display = 255 - display
    return np.ascontiguousarray(display), windowing


#: Rows converted at a time from stored values to display pixels: the float temporaries
#: of a 7000 x 7000 image stay a few tens of MB instead of several GB.
BLOCK_ROWS = 256
#: Above this many pixels the percentile window is estimated on an even subsample.
PERCENTILE_SAMPLE = 16_000_000


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear window (PS3.3 C.11.2.1.2) mapped to [0, 1] floats."""
    v = values.astype(np.float64)
    return (
        np.clip((v - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
        if width > 1
        else (v > center).astype(np.float64)
    )


def percentile_range(
    values: np.ndarray, low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """The [low, high] percentiles of ``values`` (of an even subsample of a huge array)."""
    flat = values.reshape(-1)
    if flat.size > PERCENTILE_SAMPLE:
        flat = flat[:: -(-flat.size // PERCENTILE_SAMPLE)]
    lo, hi = (float(x) for x in np.percentile(flat, [low, high]))
    return lo, (hi if hi > lo else lo + 1.0)


def to_display(values: np.ndarray, unit) -> np.ndarray:
    """``uint8`` display pixels from stored values, ``unit`` (values -> [0, 1] floats)
    applied a block of rows at a time so that memory stays bounded for huge images."""
    out = np.empty(values.shape, np.uint8)
    for start in range(0, values.shape[0], BLOCK_ROWS):
        out[start : start + BLOCK_ROWS] = _to_uint8(unit(values[start : start + BLOCK_ROWS]))
    return out


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _first(value):
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return value[0]
    return value


def _str_or_none(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    return str(value).strip() or None


def _dicom_meta(ds: pydicom.Dataset, tsyntax, windowing: str) -> DisplayMetadata:
    spacing = spacing_from_dataset(ds, int(ds.Rows), int(ds.Columns))
    orientation = ds.get("PatientOrientation")
    if orientation not in (None, ""):
        orientation = tuple(
            str(o)
            for o in (
                orientation
                if isinstance(orientation, (list, tuple, pydicom.multival.MultiValue))
                else [orientation]
            )
        )
    else:
        orientation = None
    return DisplayMetadata(
        format="DICOM",
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        bits_stored=int(ds.get("BitsStored", 8) or 8),
        transfer_syntax=str(tsyntax) if tsyntax else None,
        transfer_syntax_name=tsyntax.name if tsyntax else None,
        modality=_str_or_none(ds, "Modality"),
        view_position=_str_or_none(ds, "ViewPosition"),
        patient_orientation=orientation,
        laterality=_str_or_none(ds, "ImageLaterality") or _str_or_none(ds, "Laterality"),
        body_part=_str_or_none(ds, "BodyPartExamined"),
        study_date=_str_or_none(ds, "StudyDate"),
        pixel_spacing_mm=spacing.mm,
        spacing_source=spacing.source,
        spacing_warning=spacing.warning,
        windowing=windowing,
    )


def _dicom_identifiers(ds: pydicom.Dataset) -> Identifiers:
    return Identifiers(
        patient_name=_str_or_none(ds, "PatientName"),
        patient_id=_str_or_none(ds, "PatientID"),
        birth_date=_str_or_none(ds, "PatientBirthDate"),
        accession_number=_str_or_none(ds, "AccessionNumber"),
        sop_instance_uid=_str_or_none(ds, "SOPInstanceUID"),
        study_instance_uid=_str_or_none(ds, "StudyInstanceUID"),
        series_instance_uid=_str_or_none(ds, "SeriesInstanceUID"),
    )


# --------------------------------------------------------------------------- PNG / JPEG


def _read_raster(data: bytes, kind: str, max_pixels: int) -> ImageRecord:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            check_dimensions(img.size[1], img.size[0], max_pixels)
            img.load()
    except ImageTooLargeError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise CorruptImageError(
            f"The {kind} file could not be decoded; it may be truncated or damaged."
        ) from exc
    pixels = raster_to_grey(img)
    meta = DisplayMetadata(
        format=kind,
        rows=pixels.shape[0],
        columns=pixels.shape[1],
        bits_stored=16 if img.mode.startswith("I") else 8,
        windowing="percentile" if img.mode.startswith("I") else "none",
        chroma=chroma(img),
    )
    return ImageRecord(pixels=pixels, meta=meta)


def chroma(img: Image.Image) -> float:
    """Mean colour saturation (max - min channel, 0-255) of a PIL image; 0 for grey modes.

    Measured on at most ~256 x 256 samples, so a large photograph costs little.
    """
    if img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith("I;"):
        return 0.0
    step = max(1, max(img.size) // 256)
    rgb = np.asarray(img.convert("RGB"), np.int16)[::step, ::step]
    return round(float((rgb.max(axis=2) - rgb.min(axis=2)).mean()), 2)


def raster_to_grey(img: Image.Image) -> np.ndarray:
    """Convert a PIL image (grey 8/16-bit, RGB, RGBA, palette) to ``uint8`` grey."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        lo, hi = percentile_range(arr)
        return to_display(arr, lambda block: (block.astype(np.float64) - lo) / (hi - lo))
    if img.mode != "L":
        img = img.convert("L")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
