"""The DICOMweb client of the PACS connection, through ``dicomweb-client``: search
(QIDO-RS), fetch (WADO-RS) and store (STOW-RS), with failures turned into
:class:`PacsError` messages that name what failed, never patient data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from pneumo.errors import PneumoError

from app.settings import PacsSettings

CHEST_MODALITIES = frozenset({"CR", "DX"})


class PacsError(PneumoError):
    """The PACS could not be reached, refused the request or is not configured."""

    http_status = 502
    code = "pacs_error"


def make_client(settings: PacsSettings):
    """A ``dicomweb_client.DICOMwebClient`` for the configured server (no built-in
    retries: a failed send is recorded and retried by this module)."""
    if not settings.configured:
        raise PacsError("No PACS is configured: set PNEUMO_DICOMWEB_URL.")
    _quiet("dicomweb_client")  # it logs study UIDs at INFO on every call
    session = requests.Session()
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    elif settings.username:
        session.auth = (settings.username, settings.password or "")
    client = DICOMwebClient(url=settings.url, session=session, timeout=settings.timeout)
    client.set_http_retry_params(retry=False)
    return client


def _quiet(name: str) -> None:
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def describe_failure(exc: Exception, settings: PacsSettings) -> str:
    """A message for the result page: what failed, never patient data."""
    if isinstance(exc, PacsError):
        return str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return f"The PACS at {settings.url} did not answer within {settings.timeout:g} s."
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"The PACS at {settings.url} could not be reached (is it running?)."
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = (
            " Check PNEUMO_DICOMWEB_USERNAME/PASSWORD or PNEUMO_DICOMWEB_TOKEN."
            if status in (401, 403)
            else ""
        )
        return f"The PACS at {settings.url} answered HTTP {status}.{hint}"
    return f"Sending failed: {type(exc).__name__}."


_KINDS = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
}


def store_objects(settings: PacsSettings, datasets: list[pydicom.Dataset]) -> None:
    """STOW-RS a result's DICOM objects (SEG, SR, Secondary Capture) in one request;
    raises unless the PACS confirms every one (its refusal as :class:`PacsError`)."""
    response = make_client(settings).store_instances(datasets)
    if response is None:  # a PACS that answers 200 without a body: nothing to check
        return
    failed = response.get("FailedSOPSequence")
    if failed:
        reason = failed[0].get("FailureReason")
        code = f" (failure reason 0x{int(reason):04X})" if reason is not None else ""
        kind = _KINDS.get(str(failed[0].get("ReferencedSOPClassUID", "")), "result object")
        raise PacsError(f"The PACS at {settings.url} refused the {kind}{code}.")
    stored = {
        str(item.get("ReferencedSOPInstanceUID", ""))
        for item in response.get("ReferencedSOPSequence", [])
    }
    missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in stored]
    if missing:
        kind = _KINDS.get(str(missing[0].SOPClassUID), "result object")
        raise PacsError(
            f"The PACS at {settings.url} did not confirm that it stored the "
            f"{kind} (its answer names neither it nor a failure reason)."
        )


@dataclass
class StudyHit:
    """One study found on the PACS."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    date: str
    description: str
    modalities: list[str]
    instances: int | None

    @property
    def is_chest_radiograph(self) -> bool:
        """True for a CR/DX series of the chest (or with no body part stated)."""
        return not self.modalities or bool(CHEST_MODALITIES & set(self.modalities))


def json_value(item: dict, tag: str, default=""):
    """The first value of ``tag`` (eight hex digits, e.g. ``"0020000D"``) in a DICOM JSON
    item (a QIDO-RS result), a person name as its alphabetic form; ``default`` when the
    item has none."""
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return default
    value = values[0]
    if isinstance(value, dict):  # PN
        return value.get("Alphabetic", default)
    return value


def _dicom_date_range(date_from: str, date_to: str) -> str | None:
    """ISO dates (``YYYY-MM-DD``) to a DICOM date range match (``YYYYMMDD-YYYYMMDD``)."""
    a, b = (d.replace("-", "").strip() for d in (date_from or "", date_to or ""))
    for d in (a, b):
        if d and not (len(d) == 8 and d.isdigit()):
            raise ValueError(f"A study date must look like 2024-01-31, got {d!r}.")
    if not a and not b:
        return None
    return a if a == b else f"{a}-{b}"


def search_studies(
    settings: PacsSettings,
    patient_id: str = "",
    accession: str = "",
    date_from: str = "",
    date_to: str = "",
    limit: int = 50,
) -> list[StudyHit]:
    """QIDO-RS study search. Raises :class:`PacsError` with a message for the page."""
    filters = {}
    if patient_id.strip():
        filters["PatientID"] = patient_id.strip()
    if accession.strip():
        filters["AccessionNumber"] = accession.strip()
    date = _dicom_date_range(date_from, date_to)
    if date:
        filters["StudyDate"] = date
    try:
        found = make_client(settings).search_for_studies(
            search_filters=filters,
            limit=limit,
            fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDescription"],
        )
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001 - shown on the page
        raise PacsError(describe_failure(exc, settings)) from None
    hits = [
        StudyHit(
            study_uid=json_value(s, "0020000D"),
            patient_id=json_value(s, "00100020"),
            patient_name=str(json_value(s, "00100010")),
            accession=json_value(s, "00080050"),
            date=json_value(s, "00080020"),
            description=json_value(s, "00081030"),
            modalities=list(s.get("00080061", {}).get("Value") or []),
            instances=json_value(s, "00201208", None),
        )
        for s in found
    ]
    return [h for h in hits if h.study_uid]
