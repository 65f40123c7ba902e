"""One exception family for everything the core refuses.

Every message is written for the person who uploaded the file: it says what
was wrong and, where there is one, names the DICOM tag or the reason.
The web layer maps each class to an HTTP status code.
"""

from __future__ import annotations


class PneumoError(Exception):
    """Base class of every error the project raises on purpose."""

    #: HTTP status the web layer uses for this error.
    http_status = 400
    #: Short machine-readable code used in JSON error bodies.
    code = "invalid_input"


class UnsupportedImageError(PneumoError):
    """The file is not a DICOM, PNG or JPEG image we can read."""

    http_status = 415
    code = "unsupported_format"


class CorruptImageError(PneumoError):
    """The file claims a known format but cannot be decoded (truncated, damaged)."""

    code = "corrupt_image"


class UnsupportedDicomError(PneumoError):
    """A valid DICOM that this tool cannot show (no pixels, colour, multi-frame...)."""

    http_status = 422
    code = "unsupported_dicom"


class DicomTooComplexError(UnsupportedDicomError):
    """A DICOM whose structure is beyond the reader's limits (data elements, sequence
    items, nesting depth, inflated size): refused before it is parsed, since parsing
    it would tie the server up."""

    code = "dicom_too_complex"


class ImageTooLargeError(PneumoError):
    """Declared dimensions are zero, absurd (a side too long, a strip too narrow) or beyond
    the configured pixel cap."""

    http_status = 413
    code = "image_too_large"


class NotChestXrayError(PneumoError):
    """The image is readable but is not a frontal chest radiograph: no verdict is made."""

    http_status = 422
    code = "not_chest_xray"


class RLEError(PneumoError):
    """A run-length-encoded mask string is malformed or does not fit the image."""

    code = "invalid_rle"


class ModelLoadError(PneumoError):
    """A model folder is missing, incomplete or its weights do not match its card."""

    http_status = 503
    code = "model_unavailable"
