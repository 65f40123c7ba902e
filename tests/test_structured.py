"""Structured results for the PACS on a real SIIM file: the SR (TID 1500) beside the SEG,
and the labelled Secondary Capture; read back by pydicom and highdicom, checked by
dicom3tools' dciodvfy where it is installed."""

import io
import logging
import shutil
import subprocess
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pneumo.inference.overlay import AI_LABEL as overlay_label
from pneumo.inference.overlay import filled
from pneumo.io.capture import AI_LABEL, burn_notice, make_secondary_capture
from pneumo.io.imaging import read_image
from pneumo.io.seg import make_seg_dataset, stable_uid
from pneumo.io.sr import make_sr_dataset

CREATED = 1_700_000_000.0
PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")
#: What the app knows of a positive result (issue 24 part 4's arguments).
POSITIVE = dict(
    positive=True,
    probability=0.87,
    probability_kind="probability",
    operating_point="balanced",
    threshold=0.5,
    area_px=40_000,
    area_cm2=81.8,
    side="left",
    model_name="double_unet_v2",
    model_version="2.1.0",
)


def _mask(shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[100:300, 600:800] = True
    return mask


def _pixels_and_mask(data: bytes):
    pixels = read_image(data).pixels
    return pixels, _mask(pixels.shape)


def _written(ds: pydicom.Dataset, path) -> pydicom.Dataset:
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _objects(data: bytes, seed: str | None = "result-1", **values):
    """SEG, SR and capture of one result, as the app would make them."""
    pixels, mask = _pixels_and_mask(data)
    seg = make_seg_dataset(data, mask, POSITIVE["model_name"], seed, CREATED)
    sr = make_sr_dataset(data, seg, **{**POSITIVE, **values}, uid_seed=seed, created=CREATED)
    sc = make_secondary_capture(
        data,
        filled(pixels, mask),
        model_name=POSITIVE["model_name"],
        uid_seed=seed,
        created=CREATED,
    )
    return seg, sr, sc


def _with(data: bytes, **values) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values on purpose
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def dciodvfy_errors(path) -> list[str]:
    """dicom3tools' IOD check of a written file: its "Error" lines (warnings are allowed;
    the SIIM files' own names and missing Study ID give some)."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dicom3tools is not installed (apt-get install "
    "dicom3tools); pydicom/highdicom checks still run",
)


@pytest.fixture(scope="module")
def source_bytes(positive_dicom) -> bytes:
    return positive_dicom.read_bytes()


@pytest.fixture(scope="module")
def written(source_bytes, tmp_path_factory):
    """The three objects of one positive result, written and read back."""
    folder = tmp_path_factory.mktemp("structured")
    seg, sr, sc = _objects(source_bytes)
    return {
        name: (_written(ds, folder / f"{name}.dcm"), folder / f"{name}.dcm")
        for name, ds in (("seg", seg), ("sr", sr), ("sc", sc))
    }


def _groups(sr: pydicom.Dataset):
    report = hd.sr.srread(io.BytesIO(_bytes(sr))).content
    assert isinstance(report, hd.sr.MeasurementReport)
    (verdict,) = report.get_image_measurement_groups()
    (region,) = report.get_planar_roi_measurement_groups()
    return report, verdict, region


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _measurement(group, name: Code):
    (found,) = group.get_measurements(name=name)
    return found.value, found.unit.value


def test_sr_says_what_the_result_says(written, source_bytes):
    sr, _ = written["sr"]
    seg, _ = written["seg"]
    source = pydicom.dcmread(io.BytesIO(source_bytes))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.Modality == "SR" and sr.StudyInstanceUID == source.StudyInstanceUID
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert sr.PatientID == source.PatientID
    report, verdict, region = _groups(sr)

    (evaluation,) = verdict.get_qualitative_evaluations(name=PNEUMOTHORAX)
    assert evaluation.value.value == "52101004"  # SCT Present
    assert _measurement(verdict, Code("122157", "DCM", "Probability")) == (0.87, "{ratio}")
    assert _measurement(verdict, Code("122411", "DCM", "Threshold Value")) == (0.5, "{ratio}")
    (site,) = verdict.finding_sites
    assert site.laterality.value == "7771000"  # SCT Left
    assert verdict.finding_type.value == "36118008"
    assert verdict.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID

    assert _measurement(region, Code("42798000", "SCT", "Area")) == (81.8, "cm2")
    frame = region.referenced_segmentation_frame
    assert frame.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert frame.referenced_segment_numbers == [1]
    assert frame.source_image_for_segmentation.referenced_sop_instance_uid == source.SOPInstanceUID

    for group in (verdict, region):
        items = group[0].ContentSequence
        assert items.find(codes.DCM.AlgorithmName)[0].value == "double_unet_v2"
        assert items.find(codes.DCM.AlgorithmVersion)[0].value == "2.1.0"
        assert items.find(codes.DCM.AlgorithmParameters)[0].value == "operating point: balanced"
    (observer,) = report.get_observer_contexts()
    assert observer.observer_type.value == "121007"  # Device
    assert observer.observer_identifying_attributes.name == "double_unet_v2"
    assert observer.observer_identifying_attributes.model_name == "double_unet_v2 2.1.0"
    evidence = {uid for _, _, uid, _ in hd.sr.srread(io.BytesIO(_bytes(sr))).get_evidence()}
    assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}


@pytest.mark.parametrize(
    "values, area, laterality, verdict_code",
    [
        ({}, (81.8, "cm2"), "7771000", "52101004"),
        ({"area_cm2": None}, (40_000.0, "{pixels}"), "7771000", "52101004"),  # implausible spacing
        ({"side": "both"}, (81.8, "cm2"), "51440002", "52101004"),
        ({"side": "unknown"}, (81.8, "cm2"), None, "52101004"),
        (
            {"positive": False, "side": "none", "area_px": 0, "area_cm2": 0.0, "probability": 0.12},
            (0.0, "cm2"),
            None,
            "272519000",
        ),  # SCT Absent
    ],
)
def test_sr_area_unit_side_and_verdict(source_bytes, values, area, laterality, verdict_code):
    _, sr, _ = _objects(source_bytes, **values)
    _, verdict, region = _groups(sr)
    assert _measurement(region, Code("42798000", "SCT", "Area")) == area
    assert [s.laterality.value for s in verdict.finding_sites] == (
        [laterality] if laterality else []
    )
    assert verdict.get_qualitative_evaluations(name=PNEUMOTHORAX)[0].value.value == verdict_code


def test_sr_says_when_a_negative_verdict_is_in_the_review_band(source_bytes, tmp_path):
    """The page's sub-threshold note reaches the PACS: a negative verdict in the review
    band carries the finding, a positive one or one outside the band does not."""
    finding = Code("121073", "DCM", "Impression")
    negative = {"positive": False, "probability": 0.7, "side": "none"}
    _, sr, _ = _objects(source_bytes, **negative, below_threshold=True)
    _, verdict, _ = _groups(sr)
    (note,) = verdict.get_qualitative_evaluations(name=finding)
    assert note.value.value == "SUBTHRESHOLD" and "review band" in note.value.meaning
    assert verdict.get_qualitative_evaluations(name=PNEUMOTHORAX)[0].value.value == "272519000"
    for values in (negative, {"below_threshold": True}):  # outside the band; positive
        values = {"below_threshold": False, **values}
        _, sr, _ = _objects(source_bytes, **values)
        assert _groups(sr)[1].get_qualitative_evaluations(name=finding) == []
    if shutil.which("dciodvfy"):
        _, sr, _ = _objects(source_bytes, **negative, below_threshold=True)
        sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_sr_calls_an_uncalibrated_score_a_score(source_bytes):
    _, sr, _ = _objects(source_bytes, probability_kind="score", probability=3.2, threshold=2.5)
    _, verdict, _ = _groups(sr)
    assert verdict.get_measurements(name=Code("122157", "DCM", "Probability")) == []
    assert _measurement(verdict, Code("246262008", "SCT", "Score")) == (3.2, "1")
    assert _measurement(verdict, Code("122411", "DCM", "Threshold Value")) == (2.5, "1")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"probability_kind": "logit"}, "probability_kind"),
        ({"probability": 1.5}, "probability must be in"),
        ({"threshold": float("nan")}, "threshold must be a finite"),
        ({"side": "top"}, "side must be one of"),
        ({"area_px": -1}, "non-negative"),
        ({"model_version": ""}, "version"),
        ({"operating_point": ""}, "operating_point"),
    ],
)
def test_sr_refuses_impossible_values(written, source_bytes, values, message):
    seg, _ = written["seg"]
    with pytest.raises(ValueError, match=message):
        make_sr_dataset(
            source_bytes, seg, **{**POSITIVE, **values}, uid_seed="result-1", created=CREATED
        )


def test_sr_refuses_a_seg_of_another_image(written, source_bytes):
    seg, _ = written["seg"]
    other = _with(source_bytes, SOPInstanceUID="1.2.3.4.5")
    with pytest.raises(ValueError, match="not made from this source"):
        make_sr_dataset(other, seg, **POSITIVE, uid_seed="result-1", created=CREATED)


def test_capture_shows_the_overlay_with_the_label_burned_in(written, source_bytes):
    sc, _ = written["sc"]
    source = pydicom.dcmread(io.BytesIO(source_bytes))
    pixels, mask = _pixels_and_mask(source_bytes)
    overlay = filled(pixels, mask)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.BurnedInAnnotation == "YES"
    assert "AI output" in sc.SeriesDescription and sc.PhotometricInterpretation == "RGB"
    assert (sc.StudyInstanceUID, sc.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    shown = sc.pixel_array
    assert shown.shape == overlay.shape and shown.dtype == np.uint8
    left, top, right, bottom = burn_notice(overlay)[1]
    label = np.zeros(shown.shape[:2], bool)
    label[top:bottom, left:right] = True
    assert np.array_equal(shown[~label], overlay[~label])  # the overlay, untouched
    assert np.array_equal(shown[mask & ~label], overlay[mask & ~label])
    assert not np.array_equal(shown[label], overlay[label])
    box = shown[top:bottom, left:right]
    assert (box == 255).all(axis=2).sum() > 200 and (box == 0).all(axis=2).mean() > 0.5
    assert left < 0.05 * shown.shape[1] and top < 0.05 * shown.shape[0]  # top-left
    assert bottom - top >= 0.025 * shown.shape[0]  # readable size


def test_label_on_a_small_image_and_refused_where_it_cannot_be_read():
    assert AI_LABEL == overlay_label  # the same words as on overlay.png
    small = np.full((100, 160, 3), 128, np.uint8)
    labelled, (left, top, right, bottom) = burn_notice(small, AI_LABEL)
    assert right <= 160 and bottom - top >= 12 and (labelled[top:bottom, left:right] == 255).any()
    assert np.array_equal(labelled[bottom:], small[bottom:])
    with pytest.raises(ValueError, match="uint8"):
        make_secondary_capture(
            b"", small.astype(np.float32), model_name="m", uid_seed="x", created=CREATED
        )
    with pytest.raises(ValueError, match="too small"):
        make_secondary_capture(b"", small[:64, :80], model_name="m", uid_seed="x", created=CREATED)


def test_same_result_same_objects_other_result_other_uids(source_bytes):
    first, again, other = (
        _objects(source_bytes, seed) for seed in ("result-1", "result-1", "result-2")
    )
    for index, (kind, ds) in enumerate((("sr", first[1]), ("sc", first[2]))):
        assert ds.SeriesInstanceUID == stable_uid("result-1", f"{kind}-series")
        assert ds.SOPInstanceUID == stable_uid("result-1", f"{kind}-sop")
        assert _bytes(ds) == _bytes(again[index + 1])  # byte for byte on every render
        assert ds.SOPInstanceUID != other[index + 1].SOPInstanceUID
        assert ds.SeriesInstanceUID != other[index + 1].SeriesInstanceUID
    uids = {ds.SOPInstanceUID for ds in first} | {ds.SeriesInstanceUID for ds in first}
    assert len(uids) == 6


def test_source_without_study_or_series_uids(source_bytes, tmp_path):
    """The SIIM test images without Study/Series UIDs: SEG, SR and capture all get the
    same valid derived study, and the SR names the image the SEG names."""
    data = _with(
        source_bytes, StudyInstanceUID="", SeriesInstanceUID="", SOPInstanceUID="ID_48eca29e9"
    )
    seg, sr, sc = (_written(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(_objects(data)))
    for ds in (sr, sc):
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert pydicom.uid.UID(str(uid)).is_valid, uid
        assert ds.StudyInstanceUID == seg.StudyInstanceUID
    source_uid = (
        seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    )
    _, verdict, region = _groups(sr)
    assert verdict.source_images[0].referenced_sop_instance_uid == source_uid
    assert region.referenced_segmentation_frame.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source_uid
    assert _objects(data, "result-2")[1].StudyInstanceUID != sr.StudyInstanceUID


#: Results unlike the fixture's: a source without Study/Series UIDs, an area in pixels,
#: an unknown side and a score; a negative result with an empty SEG.
VARIANTS = [
    (
        {"StudyInstanceUID": "", "SeriesInstanceUID": "", "SOPInstanceUID": "ID_48eca29e9"},
        {"area_cm2": None, "side": "unknown", "probability_kind": "score"},
    ),
    ({}, {"positive": False, "side": "none", "area_px": 0, "area_cm2": None, "probability": 0.1}),
]


@needs_dciodvfy
def test_dciodvfy_finds_no_errors(written):
    for name in ("sr", "sc"):
        assert dciodvfy_errors(written[name][1]) == [], name


@needs_dciodvfy
@pytest.mark.parametrize("source_values, values", VARIANTS)
def test_dciodvfy_finds_no_errors_in_other_results(source_bytes, tmp_path, source_values, values):
    data = _with(source_bytes, **source_values) if source_values else source_bytes
    _, sr, sc = _objects(data, **values)
    for name, ds in (("sr", sr), ("sc", sc)):
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"{name}.dcm") == [], name


def test_sr_and_capture_log_nothing_from_highdicom(written, source_bytes, caplog):
    """highdicom logs the source's UIDs at INFO level; none of that in our logs."""
    seg, _ = written["seg"]
    pixels, mask = _pixels_and_mask(source_bytes)
    caplog.set_level(logging.INFO)
    make_sr_dataset(source_bytes, seg, **POSITIVE, uid_seed="result-1", created=CREATED)
    make_secondary_capture(
        source_bytes, filled(pixels, mask), model_name="m", uid_seed="result-1", created=CREATED
    )
    assert [r for r in caplog.records if r.name.startswith("highdicom")] == []


def test_capture_says_what_the_page_and_the_sr_say(source_bytes):
    """The Secondary Capture's burned-in text carries the verdict, the probability against
    the threshold, the operating point and the review band (issue 35), in its pixels and
    in Image Comments."""
    import dataclasses

    from app.renditions import sc_findings
    from app.store.records import ResultRow

    row = ResultRow(
        id="r" * 22,
        owner="user:1",
        created=CREATED,
        source_format="DICOM",
        positive=False,
        probability=0.412,
        threshold=0.66,
        area_px=0,
        area_cm2=None,
        side={},
        meta={},
        identifiers={},
        model="m (v4)",
        rle="-1",
        timings={},
        probability_kind="probability",
        operating_point={"name": "balanced"},
        finding_below_threshold=True,
    )
    said = sc_findings(row)
    assert said.splitlines() == [
        "Not detected: p 0.41 (threshold 0.66)",
        "operating point: balanced",
        "in the review band: check the heat map",
    ]
    positive = sc_findings(dataclasses.replace(row, positive=True, probability=0.996))
    assert positive.startswith("Pneumothorax suspected: p > 0.99 (threshold 0.66)")
    assert "review band" not in positive
    score = sc_findings(
        dataclasses.replace(row, probability_kind="score", finding_below_threshold=False)
    )
    assert (
        score.splitlines()[0] == "Not detected: score 0.41 (threshold 0.66)" and "band" not in score
    )
    assert all(line.isascii() and len(line) <= 45 for line in said.splitlines())

    overlay = filled(*_pixels_and_mask(source_bytes))
    plain = make_secondary_capture(
        source_bytes, overlay, model_name="m", uid_seed="x", created=CREATED
    )
    told = make_secondary_capture(
        source_bytes, overlay, model_name="m", uid_seed="x", created=CREATED, findings=said
    )
    assert told.ImageComments.endswith(
        "Not detected: p 0.41 (threshold 0.66); operating point: balanced; "
        "in the review band: check the heat map"
    )
    _, one = burn_notice(overlay)
    _, four = burn_notice(overlay, AI_LABEL + "\n" + said)
    assert four[3] - four[1] > 3 * (one[3] - one[1])  # four lines, each as high as the label
    assert four[2] <= overlay.shape[1]  # every line fits across the film
    shown, before = told.pixel_array, plain.pixel_array
    below = slice(one[3] + 2, four[3] - 2)
    assert not np.array_equal(shown[below, : four[2]], before[below, : four[2]])
    white = (shown[below, : four[2]] == 255).all(axis=2).sum()
    assert white > 3 * (before[one[1] : one[3], : one[2]] == 255).all(axis=2).sum() / 2
    assert np.array_equal(shown[four[3] :], before[four[3] :])  # the overlay below, untouched


# -- a radiologist's review beside the model's objects (issue 35) -------------------------

REVIEW_SEED = "result-1:review:user:2:1700000100.0"


def _review_objects(data: bytes, present, review: str, with_seg: bool = True):
    from pneumo.io.sr import make_review_sr_dataset

    pixels, _ = _pixels_and_mask(data)
    corrected = np.zeros(pixels.shape, bool)
    corrected[200:420, 500:700] = True
    seg = (
        make_seg_dataset(
            data, corrected, "double_unet_v2", REVIEW_SEED, CREATED + 100, reviewer="alice"
        )
        if with_seg
        else None
    )
    sr = make_review_sr_dataset(
        data,
        seg,
        reviewer="alice",
        present=present,
        review=review,
        area_px=int(corrected.sum()) if with_seg else 0,
        area_cm2=None,
        model_name="double_unet_v2",
        uid_seed=REVIEW_SEED,
        created=CREATED + 100,
    )
    return corrected, seg, sr


def test_a_reviewers_seg_is_marked_as_theirs_and_never_replaces_the_models(source_bytes):
    model_seg, _, _ = _objects(source_bytes)
    corrected, seg, _ = _review_objects(source_bytes, True, "missed")
    seg = hd.seg.segread(io.BytesIO(_bytes(seg)))
    assert seg.StudyInstanceUID == model_seg.StudyInstanceUID  # the same study and image
    assert seg.SOPInstanceUID != model_seg.SOPInstanceUID
    assert seg.SeriesInstanceUID != model_seg.SeriesInstanceUID
    assert (seg.SeriesNumber, model_seg.SeriesNumber) == (902, 900)
    assert str(seg.ContentCreatorName) == "alice^"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in segment
    assert model_seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert "radiologist" in seg.SeriesDescription and "radiologist" in segment.SegmentLabel
    frame = seg.pixel_array.reshape(corrected.shape)
    assert np.array_equal(frame.astype(bool), corrected)


@pytest.mark.parametrize(
    "present, review, verdict",
    [
        (True, "missed", "52101004"),
        (False, "false_alarm", "272519000"),
        (True, "agree", "52101004"),
        (None, "other", None),
    ],
)
def test_a_review_sr_gives_the_reviewers_verdict(source_bytes, present, review, verdict):
    from pneumo.io.sr import AI_REVIEW, REVIEW_VALUES

    _, seg, sr = _review_objects(source_bytes, present, review)
    sr = pydicom.dcmread(io.BytesIO(_bytes(sr)))
    assert (sr.SeriesNumber, sr.SeriesDescription) == (903, "Pneumothorax review (radiologist)")
    assert sr.VerificationFlag == "VERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert sr.PreliminaryFlag == "PRELIMINARY"  # a review, not the radiology report
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "alice^"
    report = hd.sr.srread(io.BytesIO(_bytes(sr))).content
    observers = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121008"  # Person Observer Name
    ]
    assert [str(item.PersonName) for item in observers] == ["alice^"]
    (group,) = report.get_image_measurement_groups()
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    assert evaluations[AI_REVIEW.value] == REVIEW_VALUES[review].value
    assert evaluations.get("36118008") == verdict  # none when the review cannot say
    assert not group.get_measurements()  # the model's probability stays in the model's SR
    (region,) = report.get_planar_roi_measurement_groups()
    assert region.referenced_segmentation_frame.referenced_sop_instance_uid == seg.SOPInstanceUID
    area = region.get_measurements(name=Code("42798000", "SCT", "Area"))[0]
    assert area.value == 220 * 200 and area.unit.value == "{pixels}"


def test_a_review_sr_without_a_region_and_refusals(source_bytes):
    from pneumo.io.sr import make_review_sr_dataset

    _, _, sr = _review_objects(source_bytes, False, "false_alarm", with_seg=False)
    report = hd.sr.srread(io.BytesIO(_bytes(sr))).content
    assert report.get_planar_roi_measurement_groups() == []
    values = dict(
        reviewer="alice",
        present=True,
        review="agree",
        area_px=0,
        area_cm2=None,
        model_name="m",
        uid_seed="s",
        created=CREATED,
    )
    with pytest.raises(ValueError, match="review must be one of"):
        make_review_sr_dataset(source_bytes, None, **{**values, "review": "maybe"})
    with pytest.raises(ValueError, match="reviewer must be named"):
        make_review_sr_dataset(source_bytes, None, **{**values, "reviewer": ""})


@needs_dciodvfy
def test_dciodvfy_finds_no_errors_in_a_review_sr(source_bytes, tmp_path):
    for present, review, with_seg in ((True, "missed", True), (None, "other", False)):
        _, _, sr = _review_objects(source_bytes, present, review, with_seg)
        sr.save_as(tmp_path / "review_sr.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / "review_sr.dcm") == [], review
