"""DICOMweb STOW-RS receiver: a PACS (or any DICOMweb client) pushes X-rays for analysis.

``POST /dicomweb/studies`` (and ``/dicomweb/studies/<StudyInstanceUID>``)
takes ``multipart/related; type="application/dicom"`` with one or more
instances, authenticated by an API bearer token whose user owns the results.
Each instance is analysed exactly like an upload (:meth:`app.service.Analyser.analyse_many`)
under the same request size, instance count and pixel limits, and the answer
is the standard STOW-RS response (PS3.18 §10.5): a DICOM JSON dataset with a
Referenced SOP Sequence for the stored instances and a Failed SOP Sequence
with a Failure Reason for each refused one; 200 when all were stored, 202
when some were, 409 when none was. The reason in words comes back in
``Warning: 299`` headers (PS3.18 §8.3.5). The body is parsed by the
maintained ``multipart`` package, streaming, never by hand.
"""

from __future__ import annotations

import logging
import warnings

import multipart
import pydicom
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from pneumo.errors import (
    CorruptImageError,
    DicomTooComplexError,
    ImageTooLargeError,
    NotChestXrayError,
    PneumoError,
    UnsupportedDicomError,
    UnsupportedImageError,
)
from pneumo.io.dicomguard import identity, read_dataset

from app.context import analyser, current_owner, limiter, settings, upload_limit
from app.service import BUSY, STORAGE_UNAVAILABLE, Item, Refusal

log = logging.getLogger(__name__)
bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

# Failure Reason (0008,1197) values, PS3.18 Table 10.5.3-2 (codes from PS3.4
# Annex B.2.3 and PS3.7 Annex C):
#: 0xA700 Refused: Out of Resources (too large or too complex to read, or the server
#: cannot store it).
OUT_OF_RESOURCES = 0xA700
#: 0xA900 Error: Data Set does not match SOP Class (an image we cannot read as a
#: greyscale radiograph: colour, multi-frame, missing Rows...).
DOES_NOT_MATCH = 0xA900
#: 0xC000 Error: Cannot understand (not a DICOM Part 10 instance, damaged).
CANNOT_UNDERSTAND = 0xC000
#: 0x0110 Processing failure (anything unexpected while analysing).
PROCESSING_FAILURE = 0x0110
#: 0x0122 Referenced SOP Class not supported (no pixel data: SR, SEG, KO...).
SOP_CLASS_NOT_SUPPORTED = 0x0122


class StowError(Exception):
    """A whole STOW request is refused (HTTP status and a message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def init_app(app) -> None:
    """Answer DICOMweb requests without a bearer token before the login check
    (which would redirect a PACS to the login page)."""
    app.before_request(_require_bearer)


def _require_bearer():
    if not request.path.startswith(bp.url_prefix + "/"):
        return None
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return _error(
            401,
            "Send an API token: Authorization: Bearer <token> "
            "(.venv/bin/pneumo create-token NAME).",
        )
    return None


def _error(status: int, message: str) -> Response:
    code = {401: "unauthorized", 413: "too_large", 415: "unsupported_media_type"}.get(
        status, "bad_request" if status < 500 else "server_error"
    )
    resp = jsonify(error={"code": code, "message": message})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="pneumo"'
    return resp


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        return _error(413, f"The request is too large: at most {limit} MB.")
    return _error(exc.code or 500, exc.description or exc.name)


class _RelatedParser(multipart.PushMultipartParser):
    """``multipart/related`` (RFC 2387): parts carry a Content-Type, no Content-Disposition.

    The package's parser checks form-data dispositions in ``_create_segment``,
    the hook its documentation names for other multipart types."""

    def _create_segment(self, headerlist):
        return multipart.MultipartSegment(headerlist)


def read_parts(stream, content_type: str, max_parts: int) -> list[tuple[str | None, bytes]]:
    """The ``(content type, bytes)`` of each part of a STOW-RS request body.

    Raises:
        StowError: wrong media type (415), malformed body (400), too many parts (413).
    """
    mimetype, options = multipart.parse_options_header(content_type or "")
    if mimetype != "multipart/related":
        raise StowError(415, 'STOW-RS expects multipart/related; type="application/dicom".')
    if options.get("type", "application/dicom").lower() != "application/dicom":
        raise StowError(
            415,
            f"Only application/dicom parts are accepted, not {options['type']!r} "
            "(send Part 10 instances, not metadata and bulk data).",
        )
    if not options.get("boundary"):
        raise StowError(400, "The multipart Content-Type has no boundary.")
    parts: list[tuple[str | None, bytes]] = []
    chunks: list[bytes] = []
    try:
        parser = _RelatedParser(options["boundary"], max_segment_count=max_parts)
        for event in parser.parse_blocking(stream.read):
            if isinstance(event, multipart.MultipartSegment):
                segment, chunks = event, []
            elif event:
                chunks.append(event)
            else:
                parts.append((segment.content_type, b"".join(chunks)))
    except multipart.ParserLimitReached:
        raise StowError(
            413,
            f"More than {max_parts} instances were sent; at most {max_parts} "
            "can be analysed in one request.",
        ) from None
    except multipart.MultipartError as exc:
        raise StowError(400, f"The multipart body could not be read: {exc}") from None
    if not parts:
        raise StowError(400, "The request holds no DICOM instance.")
    return parts


def _identify(data: bytes) -> tuple[pydicom.Dataset | None, PneumoError | None]:
    """The instance as a dataset (pixels not decoded), read as every reader reads DICOM
    (:func:`pneumo.io.dicomguard.read_dataset`), or, where that refuses it, the refusal
    and a dataset of the SOP Class and Instance UIDs its bytes state (``None`` without
    them), which name it in the answer."""
    try:
        return read_dataset(data, part10_only=True), None
    except PneumoError as exc:
        return _named(data), exc


def _named(data: bytes) -> pydicom.Dataset | None:
    """A dataset of the SOP Class and Instance UIDs a refused instance states."""
    sop_class, sop_instance = identity(data)
    if sop_class is None and sop_instance is None:
        return None
    named = pydicom.Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sop_class:
            named.SOPClassUID = sop_class
        if sop_instance:
            named.SOPInstanceUID = sop_instance
    return named


def _error_reason(exc: BaseException | None) -> int:
    """The Failure Reason of a file the reader or the model refused with ``exc``."""
    if isinstance(exc, (ImageTooLargeError, DicomTooComplexError)):
        return OUT_OF_RESOURCES
    if isinstance(exc, (UnsupportedDicomError, NotChestXrayError)):
        return DOES_NOT_MATCH
    if isinstance(exc, (UnsupportedImageError, CorruptImageError)):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE


def _failure_reason(refused: Refusal) -> int:
    if refused.code in (STORAGE_UNAVAILABLE, BUSY, "request_too_large"):
        return OUT_OF_RESOURCES
    return _error_reason(refused.error)


def precheck(data: bytes, content_type: str | None, study_uid: str | None = None):
    """Why a received part cannot be analysed at all, before the model sees it.

    Returns:
        ``(header, None)`` for an instance to analyse, ``(header, (reason, message))``
        for one refused here (``header`` is ``None`` when nothing in it names the
        instance; for one the reader refuses, it holds only the UIDs that name it).
    """
    header, refused = _identify(data)
    if content_type and content_type != "application/dicom":
        return header, (
            CANNOT_UNDERSTAND,
            f"A part of type {content_type} is not a DICOM instance.",
        )
    if isinstance(refused, UnsupportedImageError):
        return header, (CANNOT_UNDERSTAND, "Not a DICOM Part 10 instance.")
    if refused is not None:
        return header, (_error_reason(refused), str(refused))
    if study_uid and str(header.get("StudyInstanceUID", "")) != study_uid:
        return header, (
            DOES_NOT_MATCH,
            "The instance belongs to another study than the one in the URL.",
        )
    if "PixelData" not in header and "FloatPixelData" not in header:
        return header, (
            SOP_CLASS_NOT_SUPPORTED,
            "No image: Pixel Data (7FE0,0010) is missing (a report, SEG or other object).",
        )
    return header, None


def store_instances(
    parts: list[tuple[str | None, bytes]], owner: str, study_uid: str | None = None
) -> list:
    """Check each received part, analyse those that pass through the service.

    Returns:
        per part, in order: ``(header, row, None)`` when stored, ``(header, None,
        (reason, message))`` when not.
    """
    checked = [precheck(data, ctype, study_uid) for ctype, data in parts]
    todo = [i for i, (_, failure) in enumerate(checked) if failure is None]
    outcome = analyser().analyse_many([Item("", parts[i][1]) for i in todo], owner, source="STOW")
    analysed = dict(zip(todo, (entry for _, entry in outcome.entries)))
    out = []
    for i, (header, failure) in enumerate(checked):
        entry = analysed.get(i, outcome.refused_request)
        if failure is not None:
            out.append((header, None, failure))
        elif isinstance(entry, Refusal):
            out.append((header, None, (_failure_reason(entry), entry.message)))
        else:
            out.append((header, entry, None))
    return out


def _sop_item(header: pydicom.Dataset | None) -> pydicom.Dataset:
    item = pydicom.Dataset()
    if header is not None:
        if "SOPClassUID" in header:
            item.ReferencedSOPClassUID = header.SOPClassUID
        if "SOPInstanceUID" in header:
            item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item


def stow_response(outcomes: list) -> tuple[dict, int]:
    """The STOW-RS response (DICOM JSON) and its HTTP status for the per-instance outcomes."""
    resp = pydicom.Dataset()
    stored, failed = [], []
    for header, row, failure in outcomes:
        item = _sop_item(header)
        if row is not None:
            stored.append(item)
        else:
            item.FailureReason = failure[0]
            failed.append(item)
    if stored:
        resp.ReferencedSOPSequence = stored
    if failed:
        resp.FailedSOPSequence = failed
    status = 200 if not failed else (202 if stored else 409)
    return resp.to_json_dict(), status


@bp.post("/studies")
@bp.post("/studies/<study_uid>")
@limiter.limit(upload_limit)
def stow(study_uid: str | None = None):
    """STOW-RS: store (analyse) the DICOM instances of a multipart/related request."""
    if not g.get("bearer"):  # an API token was checked by access.check_access
        return _error(401, "Send an API token: Authorization: Bearer <token>.")
    try:
        parts = read_parts(
            request.stream, request.headers.get("Content-Type", ""), settings().max_files
        )
    except StowError as exc:
        return _error(exc.status, str(exc))
    outcomes = store_instances(parts, current_owner(), study_uid)
    body, status = stow_response(outcomes)
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = "application/dicom+json"
    for _, _row, failure in outcomes:
        if failure:
            resp.headers.add("Warning", f'299 pneumo "{_header_text(failure[1])}"')
    return resp


def _header_text(message: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != '"' else " " for c in message)[:300]
