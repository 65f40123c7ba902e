"""Import studies from the PACS (QIDO-RS + WADO-RS) and analyse their X-rays through the
service, like an upload; the SEG, SR and other non-image series of a study are skipped."""

from __future__ import annotations

import dataclasses
import io

import pydicom

from app.pacs.client import PacsError, describe_failure, json_value, make_client
from app.service import Analyser, Item, Refusal, UploadOutcome
from app.settings import PacsSettings

#: Modalities that are never X-rays to analyse (our own SEGs live in the same study).
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "DOC", "REG", "RWV", "OT_SR"})


def _instance_name(ds: pydicom.Dataset) -> str:
    date = str(ds.get("StudyDate", "") or "")
    iso = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else "no date"
    parts = [
        f"PACS study {iso}",
        str(ds.get("Modality", "") or ""),
        str(ds.get("ViewPosition", "") or ""),
    ]
    return " ".join(p for p in parts if p) + f" #{ds.get('InstanceNumber', '') or ''}"


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pull_study(
    settings: PacsSettings, study_uid: str, owner: str, analyser: Analyser
) -> UploadOutcome:
    """Fetch a study's X-rays (WADO-RS, as stored, one at a time) and analyse each.

    A fetch that fails is refused like a file that cannot be read. Raises
    :class:`PacsError` when the PACS cannot be searched or the study is unknown.
    """
    client = make_client(settings)
    try:
        listed = client.search_for_instances(
            study_instance_uid=study_uid, fields=["Modality", "SOPClassUID"]
        )
    except Exception as exc:  # noqa: BLE001 - shown on the page
        raise PacsError(describe_failure(exc, settings)) from None
    if not listed:
        raise PacsError(f"The PACS has no study {study_uid}.")
    wanted = [
        (json_value(i, "0020000E"), json_value(i, "00080018"))
        for i in listed
        if json_value(i, "00080060") not in NON_IMAGE_MODALITIES
    ]
    names: dict[str, str] = {}

    def fetch(series_uid: str, sop_uid: str):
        def read() -> bytes:
            try:
                ds = client.retrieve_instance(
                    study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
                )
            except Exception as exc:  # noqa: BLE001
                raise PacsError(describe_failure(exc, settings)) from None
            names[sop_uid] = _instance_name(ds)
            return _to_bytes(ds)

        return read

    outcome = analyser.analyse_many(
        [
            Item(sop_uid, fetch(series_uid, sop_uid), keep_name=False)
            for series_uid, sop_uid in wanted
        ],
        owner,
        source="PACS",
    )
    # a fetched instance is named on the page by the PACS's description, not by its UID
    outcome.entries = [
        (names.get(uid, uid), _renamed(entry, names.get(uid, uid)))
        for uid, entry in outcome.entries
    ]
    return outcome


def _renamed(entry, name: str):
    return dataclasses.replace(entry, file=name) if isinstance(entry, Refusal) else entry
