"""DICOM Structured Report of one result (TID 1500 Measurement Report) with highdicom.

Many PACS viewers draw no SEG but list an SR's findings as text; the SR says what the
result page says, in coded form, beside the SEG it points to.

* **Content.** Two measurement groups under one device observer (the model):
  the *verdict* (TID 1501, the whole image): ``Pneumothorax = Present | Absent``
  (SCT 36118008; SCT 52101004 / 272519000), the calibrated probability
  (DCM 122157 *Probability*, UCUM ``{ratio}``) or, for a model without calibration,
  its score (SCT 246262008 *Score*, UCUM ``1``: a score is not a probability), the
  operating point's threshold on the same scale (DCM 122411 *Threshold Value*), the
  side as the finding site's laterality (pleura, SCT 3120008, with Left, Right or
  Bilateral from CID 244; no finding site when the side is unknown or there is no
  finding), and the source image, and for a negative verdict in the review band (the page's
  "check the heat map" note) an impression that says so (local code ``99PNEUMO
  SUBTHRESHOLD``); the *region* (TID 1410) that references
  segment 1 of the SEG and gives its area, in cm² only where the caller trusts the
  pixel spacing, else in pixels (UCUM ``{pixels}``). Both groups carry the algorithm
  identification (TID 4019: model name and version, the operating point as a
  parameter), and the observer context names the model as the device observer
  (TID 1004), so a reader sees which model said it.
* **SOP class.** Comprehensive SR (1.2.840.10008.5.1.4.1.1.88.33). The content has no
  coordinates, so Comprehensive 3D SR would add nothing but a SOP class (2015) that
  older archives do not list; Enhanced SR would hold the content too, but Orthanc's
  Stone Web Viewer reads a TID 1500 report only from Comprehensive SR. The document
  is complete, unverified and preliminary: no person has read it.
* **Identity.** Like the SEG (:mod:`pneumo.io.seg`): Series and SOP Instance UIDs
  derived from ``uid_seed`` (``"sr-series"``, ``"sr-sop"``), dates from the result's
  creation time, the source's study, and the source's missing or invalid UIDs
  replaced exactly as the SEG replaced them, so SEG, SR and capture agree.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
import warnings

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pneumo.io.seg import (
    PNEUMOTHORAX_CODE,
    REVIEW_SERIES,
    creation_time,
    derived_header,
    person_name,
    pin_creation_time,
    quiet_highdicom,
    source_dataset,
    stable_uid,
)

#: The values ``probability_kind`` takes: a calibrated probability or a raw score.
PROBABILITY_KINDS = ("probability", "score")
#: The values ``side`` takes (see :mod:`pneumo.inference.laterality`).
SIDES = ("left", "right", "both", "none", "unknown")

PNEUMOTHORAX = Code(*PNEUMOTHORAX_CODE)
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
PROBABILITY = Code("122157", "DCM", "Probability")
SCORE = Code("246262008", "SCT", "Score")
THRESHOLD = Code("122411", "DCM", "Threshold Value")
AREA = Code("42798000", "SCT", "Area")
PLEURA = Code("3120008", "SCT", "Pleural structure")
#: CID 244 Laterality by side; "unknown" and "none" have none.
LATERALITY = {
    "left": Code("7771000", "SCT", "Left"),
    "right": Code("24028007", "SCT", "Right"),
    "both": Code("51440002", "SCT", "Bilateral"),
}
RATIO = Code("{ratio}", "UCUM", "ratio")
NO_UNITS = Code("1", "UCUM", "no units")
SQUARE_CM = Code("cm2", "UCUM", "square centimeter")
PIXELS = Code("{pixels}", "UCUM", "pixels")
IMPRESSION = Code("121073", "DCM", "Impression")
#: A negative verdict whose probability lies in the model's review band (between the
#: triage and the balanced thresholds): what the result page shows as "check the heat
#: map". No standard code says it, so a local one (coding scheme ``99PNEUMO``, PS3.16
#: 8.2's private designators) with its meaning in words.
SUB_THRESHOLD = Code(
    "SUBTHRESHOLD",
    "99PNEUMO",
    "Sub-threshold: probability in the review band, check heat map",
)
#: A radiologist's review of the model's result: no standard code says "agrees with the
#: AI" or why not, so local ones (``99PNEUMO``), each with its meaning in words.
AI_REVIEW = Code("AIREVIEW", "99PNEUMO", "Review of the AI result")
REVIEW_VALUES = {
    "agree": Code("AGREE", "99PNEUMO", "Agrees with the AI result"),
    "missed": Code("MISSED", "99PNEUMO", "Disagrees: missed pneumothorax"),
    "false_alarm": Code("FALSEALARM", "99PNEUMO", "Disagrees: false alarm"),
    "wrong_extent": Code("WRONGEXTENT", "99PNEUMO", "Disagrees: wrong extent"),
    "other": Code("OTHER", "99PNEUMO", "Disagrees: other reason"),
}
#: CID 100: the procedure the report is about (a radiograph; the region is in the SEG).
XR_PROCEDURE = Code("43468-8", "LN", "XR unspecified body region")


def _check(
    *,
    probability: float,
    probability_kind: str,
    operating_point: str,
    threshold: float,
    area_px: int,
    area_cm2: float | None,
    side: str,
    model_name: str,
    model_version: str,
) -> None:
    """Refuse impossible values before any work, naming the value."""
    if not operating_point:
        raise ValueError(f"operating_point must be named, got {operating_point!r}")
    if probability_kind not in PROBABILITY_KINDS:
        raise ValueError(
            f"probability_kind must be one of {PROBABILITY_KINDS}, got {probability_kind!r}"
        )
    for name, value in (("probability", probability), ("threshold", threshold)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if probability_kind == "probability" and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1] for a probability, got {value!r}")
    if area_px < 0 or (area_cm2 is not None and not (math.isfinite(area_cm2) and area_cm2 >= 0)):
        raise ValueError(f"areas must be non-negative, got {area_px!r} px, {area_cm2!r} cm2")
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if not model_name or not model_version:
        raise ValueError(
            f"model name and version are required, got {model_name!r}, {model_version!r}"
        )


def _check_seg(source: pydicom.Dataset, seg: pydicom.Dataset) -> None:
    """The SEG must be one of this source: same study, referencing this image."""
    if str(seg.get("Modality", "")) != "SEG":
        raise ValueError(f"seg must be a DICOM SEG, got Modality {seg.get('Modality')!r}")
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence", [])
        for item in series.get("ReferencedInstanceSequence", [])
    }
    if str(source.SOPInstanceUID) not in referenced or str(seg.StudyInstanceUID) != str(
        source.StudyInstanceUID
    ):
        raise ValueError(
            f"the SEG (Study Instance UID {seg.StudyInstanceUID}, Referenced SOP Instance "
            f"UIDs {sorted(referenced)}) was not made from this source (Study Instance UID "
            f"{source.StudyInstanceUID}, SOP Instance UID {source.SOPInstanceUID}): make "
            "both from the same file with the same uid_seed"
        )


def _observer(model_name: str, model_version: str) -> hd.sr.ObservationContext:
    """TID 1002/1004: the model as the device observer, one UID per model version."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=stable_uid(f"{model_name}:{model_version}", "sr-device-observer"),
        name=model_name,
        manufacturer_name="pneumo",
        model_name=f"{model_name} {model_version}",
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device, observer_identifying_attributes=device
        )
    )


def _tracking(uid_seed: str | None, name: str) -> hd.sr.TrackingIdentifier:
    uid = stable_uid(uid_seed, f"sr-tracking-{name}") if uid_seed else hd.UID()
    return hd.sr.TrackingIdentifier(uid=uid, identifier=f"Pneumothorax {name}")


def _verdict_group(
    source: pydicom.Dataset,
    *,
    positive: bool,
    probability: float,
    probability_kind: str,
    threshold: float,
    side: str,
    algorithm: hd.sr.AlgorithmIdentification,
    uid_seed: str | None,
    below_threshold: bool = False,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 on the whole image: present or absent, the probability (or score) and
    the threshold it was compared with, the side, the source image; for a negative
    verdict in the review band, a finding that says so."""
    name, unit = (PROBABILITY, RATIO) if probability_kind == "probability" else (SCORE, NO_UNITS)
    # a finding site only says something with its side; "unknown" and "none" give none
    sites = (
        [hd.sr.FindingSite(anatomic_location=PLEURA, laterality=LATERALITY[side])]
        if side in LATERALITY
        else None
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uid_seed, "verdict"),
        finding_type=PNEUMOTHORAX,
        algorithm_id=algorithm,
        finding_sites=sites,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=PNEUMOTHORAX, value=PRESENT if positive else ABSENT)
        ]
        + (
            [hd.sr.QualitativeEvaluation(name=IMPRESSION, value=SUB_THRESHOLD)]
            if below_threshold and not positive
            else []
        ),
        measurements=[
            hd.sr.Measurement(name=name, value=float(probability), unit=unit),
            hd.sr.Measurement(name=THRESHOLD, value=float(threshold), unit=unit),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _region_group(
    source: pydicom.Dataset,
    seg: pydicom.Dataset,
    *,
    area_px: int,
    area_cm2: float | None,
    algorithm: hd.sr.AlgorithmIdentification | None,
    uid_seed: str | None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410: segment 1 of the SEG (its only frame) and its area (measured by
    ``algorithm``, or by the observer when ``None``)."""
    area, unit = (float(area_cm2), SQUARE_CM) if area_cm2 is not None else (float(area_px), PIXELS)
    segment = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=1,
        segment_number=1,
        source_image=hd.sr.SourceImageForSegmentation.from_source_image(source),
    )
    # PS3.3 Table C.18.4-1 allows a frame or a segment number, not both; TID 1410 row 7
    # leaves the frame out when the reference covers every frame of a one-segment SEG,
    # as here (one frame, segment 1)
    del segment[0].ReferencedSOPSequence[0].ReferencedFrameNumber
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uid_seed, "region"),
        referenced_segment=segment,
        finding_type=PNEUMOTHORAX,
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=AREA, value=area, unit=unit)],
    )


def make_sr_dataset(
    source: bytes | pydicom.Dataset,
    seg: pydicom.Dataset,
    *,
    positive: bool,
    probability: float,
    probability_kind: str,
    operating_point: str,
    threshold: float,
    area_px: int,
    area_cm2: float | None,
    side: str,
    model_name: str,
    model_version: str,
    uid_seed: str | None,
    created: dt.datetime | float | None,
    below_threshold: bool = False,
) -> pydicom.Dataset:
    """The result as a Comprehensive SR (TID 1500 Measurement Report), ready to send
    (STOW-RS) or write.

    Args:
        source: the uploaded DICOM (bytes) or its dataset.
        seg: the result's SEG (:func:`pneumo.io.seg.make_seg_dataset` of the same source
            and ``uid_seed``); the SR references its segment 1.
        positive: the verdict at the operating point.
        probability: the calibrated image-level probability in [0, 1], or the model's
            score when ``probability_kind`` is ``"score"``.
        probability_kind: ``"probability"`` (calibrated) or ``"score"`` (not calibrated:
            recorded as a score, never as a probability).
        operating_point: the operating point's name (e.g. ``"balanced"``).
        threshold: its threshold, on the scale of ``probability``.
        area_px: the predicted region's area in pixels of the source image.
        area_cm2: the same in cm², only where the pixel spacing is plausible; ``None``:
            the SR gives the area in pixels.
        side: ``"left"``, ``"right"``, ``"both"``, ``"none"`` (no finding) or ``"unknown"``.
        model_name, model_version: the algorithm and device observer.
        uid_seed: derive the Series and SOP Instance UIDs (and replacements for the
            source's missing UIDs) from this, e.g. the result id; ``None``: random.
        created: content and instance creation time (datetime or POSIX seconds);
            ``None``: now.
        below_threshold: a negative verdict whose probability is in the review band
            (the page's sub-threshold note): the verdict group carries a finding that
            says so (:data:`SUB_THRESHOLD`).

    Raises:
        ValueError: an impossible value (named), or a SEG made from another source.
    """
    _check(
        probability=probability,
        probability_kind=probability_kind,
        operating_point=operating_point,
        threshold=threshold,
        area_px=area_px,
        area_cm2=area_cm2,
        side=side,
        model_name=model_name,
        model_version=model_version,
    )
    quiet_highdicom()
    ds = source_dataset(source, uid_seed)
    _check_seg(ds, seg)
    created = creation_time(created)
    algorithm = hd.sr.AlgorithmIdentification(
        name=model_name,
        version=model_version,
        family=codes.cid7162.ArtificialIntelligence,
        parameters=[f"operating point: {operating_point}"],
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observer(model_name, model_version),
        procedure_reported=XR_PROCEDURE,
        imaging_measurements=[
            _verdict_group(
                ds,
                positive=positive,
                probability=probability,
                probability_kind=probability_kind,
                threshold=threshold,
                side=side,
                algorithm=algorithm,
                uid_seed=uid_seed,
                below_threshold=below_threshold,
            ),
            _region_group(
                ds, seg, area_px=area_px, area_cm2=area_cm2, algorithm=algorithm, uid_seed=uid_seed
            ),
        ],
    )
    return _document(ds, seg, report, model_name, uid_seed, created)


def make_review_sr_dataset(
    source: bytes | pydicom.Dataset,
    seg: pydicom.Dataset | None,
    *,
    reviewer: str,
    present: bool | None,
    review: str,
    area_px: int,
    area_cm2: float | None,
    model_name: str,
    uid_seed: str,
    created: dt.datetime | float | None,
) -> pydicom.Dataset:
    """A radiologist's review of a result as its own Comprehensive SR (TID 1500), beside
    the model's: what the PACS shows as the reader's verdict once someone has reviewed.

    The reviewer is the person observer (TID 1003) and the verifying observer (the
    document is VERIFIED: a person has read it; still not final, it is not the
    radiology report). The verdict group says ``Pneumothorax = Present | Absent`` as the
    reviewer judged it (nothing when the review cannot say: reason ``other``) and the
    review itself (:data:`AI_REVIEW`: agrees, or which disagreement); no algorithm
    and no probability, which are the model's and stay in its SR. The region group
    references segment 1 of ``seg`` (the reviewer's corrected SEG, or the model's SEG
    they agreed with) with its area; none when ``seg`` is ``None``.

    Args:
        source: the uploaded DICOM (bytes) or its dataset (as repaired for the model's
            objects, so that the same study and image are referenced).
        seg: the SEG whose segment the reviewer stands behind, or ``None``.
        reviewer: the reviewer's name (a user name; written as a Person Name).
        present: whether there is a pneumothorax, by the review (``None``: cannot say).
        review: ``"agree"`` or the disagreement's reason (keys of :data:`REVIEW_VALUES`).
        area_px, area_cm2: the area of ``seg``'s segment, as in :func:`make_sr_dataset`.
        model_name: the model whose result was reviewed (the manufacturer's model name).
        uid_seed: the review's own seed (never the result's: the model's SR stays).
        created: when the review was saved.

    Raises:
        ValueError: an impossible value (named), or a SEG made from another source.
    """
    if review not in REVIEW_VALUES:
        raise ValueError(f"review must be one of {tuple(REVIEW_VALUES)}, got {review!r}")
    if not reviewer:
        raise ValueError("the reviewer must be named")
    if area_px < 0 or (area_cm2 is not None and not (math.isfinite(area_cm2) and area_cm2 >= 0)):
        raise ValueError(f"areas must be non-negative, got {area_px!r} px, {area_cm2!r} cm2")
    quiet_highdicom()
    ds = source_dataset(source, uid_seed)
    if seg is not None:
        _check_seg(ds, seg)
    created = creation_time(created)
    name = person_name(reviewer)
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=name),
        )
    )
    evaluations = [hd.sr.QualitativeEvaluation(name=AI_REVIEW, value=REVIEW_VALUES[review])]
    if present is not None:
        evaluations.insert(
            0, hd.sr.QualitativeEvaluation(name=PNEUMOTHORAX, value=PRESENT if present else ABSENT)
        )
    groups: list = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(uid_seed, "review verdict"),
            finding_type=PNEUMOTHORAX,
            qualitative_evaluations=evaluations,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
        )
    ]
    if seg is not None:
        groups.append(
            _region_group(
                ds, seg, area_px=area_px, area_cm2=area_cm2, algorithm=None, uid_seed=uid_seed
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=XR_PROCEDURE, imaging_measurements=groups
    )
    return _document(
        ds,
        seg,
        report,
        model_name,
        uid_seed,
        created,
        series=(REVIEW_SERIES["sr"], "Pneumothorax review (radiologist)"),
        verified_by=name,
    )


def _document(
    source: pydicom.Dataset,
    seg: pydicom.Dataset | None,
    report: hd.sr.MeasurementReport,
    model_name: str,
    uid_seed: str | None,
    created: dt.datetime,
    series: tuple[int, str] = (901, "Pneumothorax report (AI, decision support)"),
    verified_by: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """The report as a document in the source's study, with the result's identity;
    verified by ``verified_by`` (a person's name) when given."""
    verification = (
        dict(
            is_verified=True,
            verifying_observer_name=verified_by,
            verifying_organization=str(source.get("InstitutionName", "") or "pneumo"),
        )
        if verified_by
        else dict(is_verified=False)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = hd.sr.ComprehensiveSR(
            # the source first: the SR copies patient, study and acquisition equipment
            # from it
            evidence=[_evidence_source(source)] + ([seg] if seg is not None else []),
            content=report[0],
            series_number=series[0],
            series_description=series[1],
            is_complete=True,
            is_final=False,
            **verification,
            **derived_header("sr", uid_seed, model_name, created),
        )
    pin_creation_time(sr, created)
    return sr


#: Type 2 patient and study attributes highdicom reads from the first evidence item;
#: a file exported without some of them still gives an SR (with them empty).
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
#: PS3.5 Table 6.2-1 Age String: three digits and a unit (SIIM writes ``46``).
_AGE = re.compile(r"^\d{3}[DWMY]$")


def _evidence_source(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The source as the SR's first evidence item, which it copies patient and study
    from: missing Type 2 attributes empty, an age not in the AS form left empty (the SR
    copies Patient's Age, the SEG's checks do not cover it). The caller's dataset is
    unchanged."""
    missing = [k for k in _TYPE2 if k not in ds]
    bad_age = "PatientAge" in ds and ds.PatientAge and not _AGE.match(str(ds.PatientAge))
    if not missing and not bad_age:
        return ds
    fixed = copy.deepcopy(ds)  # a shallow copy would share (and change) ds's elements
    for keyword in missing:
        setattr(fixed, keyword, "")
    if bad_age:
        fixed.PatientAge = ""
    return fixed
