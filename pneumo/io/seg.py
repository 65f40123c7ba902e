"""DICOM Segmentation (SEG) export of a predicted mask with highdicom.

The SEG references its source image (same study, patient and frame), so a
PACS or viewer can show it over the X-ray.

* **Stable identity.** Given a ``uid_seed`` (the app passes the result id)
  the SEG's Series and SOP Instance UIDs are UUID-derived ``2.25`` UIDs
  (PS3.5 B.2, ITU-T X.667 name-based UUIDs) of that seed, and its dates are
  the result's creation time, so the same result exported twice is the same
  instance: a PACS that receives it again does not store a second series.
* **Invalid dates, times and codes.** A source whose DA, TM or DT values break the
  standard (``StudyDate = 2020-01-01``, month 13) still gives a SEG: those values
  are left empty in what the SEG copies, as are enumerated values outside their
  list (``PatientSex = male``); :func:`invalid_copied_values` names them, so the
  result can say so. The source file itself is never changed.
* **Damaged sources.** Every object made from a source (SEG, SR, secondary capture)
  copies it as :func:`source_dataset` reads and repairs it, once: a file without the
  128-byte preamble is read all the same, an unknown Specific Character Set is the
  default repertoire, a missing SOP Class UID or Modality is filled in.
* **De-identification.** ``deidentify=True`` applies dicognito (a maintained
  implementation of the PS3.15 Annex E Basic Application Level
  Confidentiality Profile that replaces names, IDs and UIDs consistently and
  shifts dates) to the whole SEG, removes the few patient attributes it keeps
  (sex, age, size, weight...), and records Patient Identity Removed and the
  De-identification Method (text and CID 7050 codes). With the same
  ``deid_seed`` the output is the same; keep that seed secret, since it is
  what stands between the pseudonyms and the real values.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import logging
import re
import time
import uuid
import warnings

import highdicom as hd
import numpy as np
import pydicom
from dicognito import __version__ as dicognito_version
from dicognito.anonymizer import Anonymizer
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pneumo import __version__
from pneumo.errors import UnsupportedDicomError
from pneumo.io.dicomguard import read_dataset

#: SNOMED CT 36118008 |Pneumothorax (disorder)|
PNEUMOTHORAX_CODE = ("36118008", "SCT", "Pneumothorax")
#: Series numbers of a radiologist's objects (the model's SEG is 900, its SR 901).
REVIEW_SERIES = {"seg": 902, "sr": 903}
#: Namespace of the name-based UUIDs behind the SEG UIDs (a fixed random UUID).
_UID_NAMESPACE = uuid.UUID("5a0f3c52-8f0e-4f57-9d6a-0c1b7f4a8e21")
#: PS3.15 Table E.1-1 attributes dicognito keeps (it aims for plausible data)
#: that the Basic Profile removes (X) or empties (Z).
_BASIC_PROFILE_REMOVE = (
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "PatientComments",
    "AdditionalPatientHistory",
    "StudyDescription",
    "PatientSexNeutered",
    "MedicalAlerts",
    "Allergies",
    "PregnancyStatus",
    "SmokingStatus",
    "PatientState",
)
_BASIC_PROFILE_EMPTY = ("PatientSex",)
#: CID 7050 De-identification Method codes that describe what is applied.
_DEID_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)


def stable_uid(seed: str, purpose: str) -> str:
    """A UUID-derived DICOM UID (``2.25.<128-bit integer>``), the same for the same inputs.

    Args:
        seed: what the UID identifies (e.g. a result id).
        purpose: which of its UIDs (``"series"``, ``"instance"``...).
    """
    if not seed or not purpose:
        raise ValueError(f"stable_uid needs a seed and a purpose, got {seed!r}, {purpose!r}")
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{purpose}:{seed}').int}"


def quiet_highdicom() -> None:
    """highdicom logs a dozen INFO/DEBUG lines per SEG, SR or capture (with the source's
    UIDs); keep its warnings only, unless someone chose a level for it."""
    logger = logging.getLogger("highdicom")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _deidentify(ds: pydicom.Dataset, seed: str | None = None) -> None:
    """De-identify ``ds`` in place (PS3.15 Basic Profile via dicognito, dates shifted).

    Args:
        ds: a dataset without burned-in text (e.g. a SEG this module made).
        seed: makes the pseudonyms, new UIDs and date shift repeatable; ``None``: random.
    """
    Anonymizer(seed=seed).anonymize(ds)
    # dicognito invents a realistic person; a reader must see at once that this is a pseudonym.
    # The hash of dicognito's (consistent) pseudonymous ID keeps one patient one name.
    pseudo_id = str(ds.get("PatientID", "") or "")
    ds.PatientName = "ANON^" + hashlib.sha256(pseudo_id.encode()).hexdigest()[:8].upper()
    for keyword in _BASIC_PROFILE_REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in _BASIC_PROFILE_EMPTY:
        if keyword in ds:
            setattr(ds, keyword, "")
    # a SEG's pixels are a generated mask: nothing is burned in
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = [
        f"DICOGNITO {dicognito_version}",
        "PS3.15 Basic Profile, dates shifted",
    ]
    method_codes = []
    for value, meaning in _DEID_CODES:
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        method_codes.append(item)
    ds.DeidentificationMethodCodeSequence = method_codes


_TM = re.compile(r"^([01]\d|2[0-3])([0-5]\d)?([0-5]\d|60)?(\.\d{1,6})?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


def _valid_date(text: str) -> bool:
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return len(text) == 8


def _valid_temporal(vr: str, text: str) -> bool:
    """True for a DA, TM or DT value in the standard's form (PS3.5 Table 6.2-1)."""
    text = text.strip()
    if vr == "DA":
        return _valid_date(text)
    if vr == "TM":
        return bool(_TM.match(text))
    found = _DT.match(text)
    if not found:
        return False
    year, month, day, hour, minute = found.group(1, 2, 3, 4, 5)
    return (
        _valid_date(f"{year}{month or '01'}{day or '01'}")
        and int(hour or 0) < 24
        and int(minute or 0) < 60
    )


#: Enumerated values of attributes the SEG copies from its source (PS3.3 C.7.1.1).
_ENUMERATED = {"PatientSex": {"M", "F", "O"}}


def invalid_copied_values(ds: pydicom.Dataset) -> list[str]:
    """Keywords of the top-level elements whose values break the standard in a way the
    SEG cannot copy: DA/TM/DT not in the standard's form, enumerated values outside their
    list (these are left empty in the SEG)."""
    bad = []
    for elem in ds:
        if elem.value in (None, "") or elem.VR == "SQ":
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        if elem.VR in ("DA", "TM", "DT"):
            ok = all(_valid_temporal(elem.VR, str(v)) for v in values)
        else:
            allowed = _ENUMERATED.get(elem.keyword)
            ok = allowed is None or all(str(v).strip() in allowed for v in values)
        if not ok:
            bad.append(elem.keyword or str(elem.tag))
    return bad


def _empty_invalid_values(ds: pydicom.Dataset) -> None:
    """Leave empty, in ``ds``, the values :func:`invalid_copied_values` names."""
    for keyword in invalid_copied_values(ds):
        ds[keyword] = pydicom.DataElement(ds[keyword].tag, ds[keyword].VR, "")


#: The source's identifying UIDs a SEG copies or references; a PACS refuses an instance
#: without them (Orthanc: "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID").
_SOURCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _fill_source_uids(ds: pydicom.Dataset, seed: str | None) -> None:
    """Give ``ds`` a valid UID wherever one of :data:`_SOURCE_UIDS` is missing, empty or
    not a UID (files exported without them, e.g. SIIM's ``ID_...`` values): stable UIDs
    derived from ``seed`` (random without one)."""
    for keyword in _SOURCE_UIDS:
        if not pydicom.uid.UID(str(ds.get(keyword, "") or "")).is_valid:
            setattr(ds, keyword, stable_uid(seed, f"source-{keyword}") if seed else hd.UID())


#: SOP Class UID of a source that states none, by its Modality (PS3.4 B.5): CR and DX
#: Image Storage (for presentation); anything else is referenced as a Secondary Capture.
_SOP_CLASS_BY_MODALITY = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Modality of a source that states none, by its SOP Class (``OT``, other, otherwise).
_MODALITY_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
}


def _valid_uid(value) -> str | None:
    text = str(value or "").strip()
    return text if text and pydicom.uid.UID(text).is_valid else None


def _fill_sop_class_and_modality(ds: pydicom.Dataset) -> None:
    """Give ``ds`` the SOP Class UID and Modality every derived object references or
    copies where it has none (or no valid one): the SOP Class of its File Meta, else
    one for its Modality, else Secondary Capture; the Modality of that SOP Class, else
    ``OT``."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if not _valid_uid(ds.get("SOPClassUID")):
        meta = getattr(ds, "file_meta", None)
        ds.SOPClassUID = _valid_uid(
            meta.get("MediaStorageSOPClassUID") if meta else None
        ) or _SOP_CLASS_BY_MODALITY.get(modality, SECONDARY_CAPTURE)
    if not modality:
        ds.Modality = _MODALITY_BY_SOP_CLASS.get(str(ds.SOPClassUID), "OT")


#: Specific Character Set values the exports can write (highdicom's list, PS3.3 C.12.1.1.2).
_CHARACTER_SETS = frozenset(v.value for v in hd.SpecificCharacterSetValues)


def export_character_set(value) -> str | list[str] | None:
    """The Specific Character Set (0008,0005) a derived object may copy from its source.

    ``None`` (the default repertoire) for none, the default one, or a value that is not a
    defined term (``GARBAGE``: its text was read as the default repertoire too); code
    extensions (several values) are kept where each is a defined ISO 2022 term, the
    empty first value written as ``ISO 2022 IR 6``.
    """
    values = [
        str(v).strip()
        for v in (
            value
            if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
            else [value or ""]
        )
    ]
    if len(values) == 1:
        return values[0] if values[0] in _CHARACTER_SETS else None
    values = [v or "ISO 2022 IR 6" for v in values]
    if all(v in _CHARACTER_SETS and v.startswith("ISO 2022") for v in values):
        return values
    return None


def _fix_character_set(ds: pydicom.Dataset) -> None:
    """Replace, in ``ds``, a Specific Character Set the exports cannot write by what
    :func:`export_character_set` makes of it (values already read stay as read)."""
    if "SpecificCharacterSet" not in ds:
        return
    fixed = export_character_set(ds.SpecificCharacterSet)
    if fixed is None:
        del ds.SpecificCharacterSet
    elif fixed != ds.SpecificCharacterSet:
        ds.SpecificCharacterSet = fixed


def source_dataset(source: bytes | pydicom.Dataset, uid_seed: str | None) -> pydicom.Dataset:
    """The source as every object made from it (SEG, SR, secondary capture) copies it:
    its header (no pixels) read once (:func:`pneumo.io.dicomguard.read_dataset`, which
    also reads a file without the 128-byte preamble) and repaired once, here:

    * values that break the standard are left empty (:func:`invalid_copied_values`);
    * missing or invalid Study, Series and SOP Instance UIDs are replaced by ones derived
      from ``uid_seed`` (:func:`_fill_source_uids`), so that one result's objects all sit
      in the same study and name the same image;
    * a missing SOP Class UID or Modality is filled (:func:`_fill_sop_class_and_modality`);
    * a Specific Character Set that is not a defined term is the default repertoire
      (:func:`export_character_set`).

    Repairing a repaired dataset changes nothing. The caller's dataset is unchanged (a
    dataset passed in is copied).

    Args:
        source: the uploaded DICOM (bytes) or its dataset.
        uid_seed: the result's seed (e.g. its id); ``None``: random replacement UIDs.

    Raises:
        PneumoError: the bytes are not a DICOM the reader accepts.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = (
            copy.deepcopy(source)
            if isinstance(source, pydicom.Dataset)
            else read_dataset(source, stop_before_pixels=True)
        )
        _empty_invalid_values(ds)
        _fill_source_uids(ds, uid_seed)
        _fill_sop_class_and_modality(ds)
        _fix_character_set(ds)
    return ds


def creation_time(created: dt.datetime | float | None) -> dt.datetime:
    """A result's creation time (datetime, POSIX seconds, or ``None`` for now) as the
    datetime its DICOM objects record, so that every render of one result is the same."""
    if created is None or isinstance(created, (int, float)):
        return dt.datetime.fromtimestamp(time.time() if created is None else created)
    return created


def derived_header(kind: str, uid_seed: str | None, model_name: str, created: dt.datetime) -> dict:
    """The header every object made from a result (SEG, SR, secondary capture) gives
    highdicom, as keyword arguments: its Series and SOP Instance UIDs derived from
    ``uid_seed`` (purposes ``"<kind>-series"`` and ``"<kind>-sop"``; random without a
    seed), instance number 1, pneumo as manufacturer with ``model_name`` (64 characters
    at most) and its version, and ``created`` as content and series date and time."""
    if uid_seed:
        series_uid, sop_uid = (
            stable_uid(uid_seed, f"{kind}-series"),
            stable_uid(uid_seed, f"{kind}-sop"),
        )
    else:
        series_uid, sop_uid = hd.UID(), hd.UID()
    return dict(
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="pneumo",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        content_date=created.date(),
        content_time=created.time(),
        series_date=created.date(),
        series_time=created.time(),
    )


def make_seg_dataset(
    source: bytes | pydicom.Dataset,
    mask: np.ndarray,
    model_name: str,
    uid_seed: str | None = None,
    created: dt.datetime | float | None = None,
    reviewer: str | None = None,
) -> pydicom.Dataset:
    """``mask`` (bool, rows x columns of the source) as a binary DICOM SEG dataset, ready
    to send (STOW-RS) or write.

    Args:
        source: the uploaded DICOM (bytes) or its dataset.
        mask: prediction at the source image's resolution.
        model_name: recorded as the algorithm name.
        uid_seed: derive the Series and SOP Instance UIDs from this (e.g. the
            result id); ``None``: new random UIDs.
        created: content and instance creation time (datetime or POSIX seconds);
            ``None``: now.
        reviewer: a radiologist's corrected mask rather than the model's: the SEG is
            marked as theirs (segment algorithm type MANUAL, no algorithm, the
            reviewer as Content Creator's Name, its own series number and
            description, :data:`REVIEW_SERIES`); give it a ``uid_seed`` of its own
            (a review's) so that it never replaces the model's SEG.

    A source without valid Study, Series or SOP Instance UIDs (a file exported without
    them) gets stable ones derived from ``uid_seed`` in the SEG, so that a PACS accepts it.

    Raises:
        UnsupportedDicomError: the mask does not match the source's size.
    """
    quiet_highdicom()
    ds = source_dataset(source, uid_seed)
    if mask.shape != (int(ds.Rows), int(ds.Columns)):
        raise UnsupportedDicomError(
            f"Mask shape {mask.shape} does not match the source image "
            f"{int(ds.Rows)} x {int(ds.Columns)}."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _segmentation(ds, mask, model_name, uid_seed, creation_time(created), reviewer)


def make_seg(
    source: bytes | pydicom.Dataset,
    mask: np.ndarray,
    model_name: str,
    deidentify: bool = False,
    uid_seed: str | None = None,
    created: dt.datetime | float | None = None,
    deid_seed: str | None = None,
) -> bytes:
    """The SEG of :func:`make_seg_dataset` as a file, optionally de-identified.

    Args:
        deidentify: de-identify the SEG (see :func:`_deidentify`).
        deid_seed: secret seed of the de-identification (repeatable output);
            ``None`` with a ``uid_seed``: derived from it (a result id is an
            unguessable secret); with neither: random.
        the others: as :func:`make_seg_dataset`.

    Returns:
        The SEG file as bytes.
    """
    seg = make_seg_dataset(source, mask, model_name, uid_seed, created)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        seg.save_as(buf)
        if deidentify:
            if deid_seed is None and uid_seed:
                deid_seed = hashlib.sha256(f"pneumo-deid:{uid_seed}".encode()).hexdigest()
            # dicognito works on values as read from a file (strings, not date objects)
            written = pydicom.dcmread(io.BytesIO(buf.getvalue()))
            _deidentify(written, deid_seed)
            buf = io.BytesIO()
            written.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _segmentation(
    ds: pydicom.Dataset,
    mask: np.ndarray,
    model_name: str,
    uid_seed: str | None,
    created: dt.datetime,
    reviewer: str | None = None,
):
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0]
    if reviewer is None:
        made_by = dict(
            segment_label="Pneumothorax",
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=model_name[:64],
                version=__version__,
                family=codes.cid7162.ArtificialIntelligence,
            ),
        )
        series = dict(series_number=900, series_description="Pneumothorax (AI, decision support)")
    else:
        made_by = dict(
            segment_label="Pneumothorax (radiologist)",
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        series = dict(
            series_number=REVIEW_SERIES["seg"],
            series_description="Pneumothorax (radiologist's correction of the AI)",
            content_creator_name=person_name(reviewer),
        )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=Code(*PNEUMOTHORAX_CODE),
        **made_by,
    )
    header = derived_header("seg", uid_seed, model_name, created)
    seg = hd.seg.Segmentation(
        source_images=[ds],
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        device_serial_number="0",
        **series,
        # Projection radiographs have no slice thickness; the SEG IOD needs one
        # when a frame of reference is present, so a nominal 1 mm is written.
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=[float(v) for v in spacing], slice_thickness=1.0
        ),
        **header,
    )
    _pin_generated_values(seg, uid_seed or header["sop_instance_uid"], created)
    return seg


def _pin_generated_values(seg, seed: str, created: dt.datetime) -> None:
    """highdicom stamps "now" and a random Dimension Organization UID; derive them
    from the result instead, so one result always gives the same bytes."""
    pin_creation_time(seg, created)
    dim_uid = stable_uid(seed, "seg-dimension-organization")
    for item in list(seg.get("DimensionOrganizationSequence", [])) + list(
        seg.get("DimensionIndexSequence", [])
    ):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dim_uid


def person_name(name: str) -> str:
    """A reviewer's user name as a DICOM Person Name (PN): the family name component
    alone, marked so by a trailing ``^`` (PS3.5 6.2.1.2), without the characters PN
    reserves (``^``, ``=``, ``\\``), at most 64 characters."""
    cleaned = re.sub(r"[\^=\\\x00-\x1f]", " ", name).strip()[:63].strip()
    return f"{cleaned or 'reviewer'}^"


def pin_creation_time(ds: pydicom.Dataset, created: dt.datetime) -> None:
    """Replace the "now" highdicom stamps on an instance it made (instance creation,
    contribution time) by the result's Content Date and Time and ``created``, so that
    one result always gives the same bytes."""
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    stamp = created.strftime("%Y%m%d%H%M%S.%f")
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = stamp
