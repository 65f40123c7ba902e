"""DICOM SEG: stable identity per result, PS3.15 de-identification, quiet downloads."""

import io
import logging
import re

import numpy as np
import pydicom
import pytest

from pneumo.io.seg import make_seg, stable_uid
from helpers.web import result_id_from, upload
from test_privacy import PHI, phi_dicom


def test_stable_uid_is_a_valid_uuid_derived_uid():
    uid = stable_uid("result-1", "seg-series")
    assert uid == stable_uid("result-1", "seg-series")
    assert uid != stable_uid("result-2", "seg-series") != stable_uid("result-1", "seg-sop")
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid) and len(uid) <= 64
    assert pydicom.uid.UID(uid).is_valid
    with pytest.raises(ValueError, match="seed"):
        stable_uid("", "seg-series")


def test_same_result_same_seg(client, positive_dicom):
    """Downloading twice (or resending to a PACS) gives the same instance, byte for byte."""
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    first = client.get(f"/results/{rid}/seg.dcm")
    second = client.get(f"/results/{rid}/seg.dcm")
    assert first.data == second.data
    seg = pydicom.dcmread(io.BytesIO(first.data))
    assert seg.SeriesInstanceUID == stable_uid(rid, "seg-series")
    assert seg.SOPInstanceUID == stable_uid(rid, "seg-sop")
    other = result_id_from(upload(client, ("b.dcm", positive_dicom.read_bytes())))
    assert (
        pydicom.dcmread(io.BytesIO(client.get(f"/results/{other}/seg.dcm").data)).SOPInstanceUID
        != seg.SOPInstanceUID
    )
    anon1 = client.get(f"/results/{rid}/seg.dcm?deidentify=1").data
    assert anon1 == client.get(f"/results/{rid}/seg.dcm?deidentify=1").data
    anon = pydicom.dcmread(io.BytesIO(anon1))
    assert anon.SOPInstanceUID != seg.SOPInstanceUID  # never the clinical SEG's identity
    assert anon.SeriesInstanceUID != seg.SeriesInstanceUID


def test_seg_downloads_have_distinct_file_names(client, positive_dicom):
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    names = [
        client.get(f"/results/{rid}/seg.dcm{q}").headers["Content-Disposition"]
        for q in ("", "?deidentify=1")
    ]
    assert names[0] != names[1]
    assert names[0].endswith("a_seg.dcm")  # named after the uploaded file
    assert names[1].endswith(f"{rid[:8]}_seg_deidentified.dcm")  # never the uploader's name
    overlay = client.get(f"/results/{rid}/files/overlay.png?download=1")
    assert overlay.headers["Content-Disposition"].endswith("a_overlay.png")


def test_download_names_are_safe_and_fall_back_to_the_id():
    from types import SimpleNamespace
    from app.views import download_stem

    row = SimpleNamespace(id="0123456789abcdef", file_name="../chest 0421 (copy).dcm")
    assert download_stem(row) == "chest_0421_copy"
    assert download_stem(SimpleNamespace(id="0123456789abcdef", file_name="")) == "01234567"
    assert download_stem(SimpleNamespace(id="0123456789abcdef", file_name="...")) == "01234567"


def test_deidentified_seg_follows_basic_profile(client, positive_dicom):
    import highdicom as hd

    data = phi_dicom(positive_dicom)
    src = pydicom.dcmread(io.BytesIO(data))
    assert src.get("PatientSex") and src.get("PatientAge")  # the SIIM file has both
    rid = result_id_from(upload(client, ("a.dcm", data)))
    raw = client.get(f"/results/{rid}/seg.dcm?deidentify=1").data
    anon = hd.seg.segread(io.BytesIO(raw))
    assert anon.PatientIdentityRemoved == "YES"
    method = list(anon.DeidentificationMethod)
    assert any(m.startswith("DICOGNITO") for m in method)
    codes = {c.CodeValue for c in anon.DeidentificationMethodCodeSequence}
    assert {"113100", "113107"} <= codes  # Basic Profile, dates shifted (CID 7050)
    for value in list(PHI.values()) + [
        str(src.StudyInstanceUID),
        str(src.SOPInstanceUID),
        str(src.SeriesInstanceUID),
    ]:
        assert value.encode() not in raw, value
    assert anon.PatientSex == "" and "PatientAge" not in anon
    assert re.fullmatch(r"ANON\^[0-9A-F]{8}", str(anon.PatientName))  # plainly a pseudonym
    assert anon.StudyDate != src.StudyDate
    # the references stay consistent inside the de-identified SEG
    ref = anon.ReferencedSeriesSequence[0]
    source_ref = (
        anon.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    )
    assert (
        ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        == source_ref.ReferencedSOPInstanceUID
    )
    mask = client.get(f"/results/{rid}/files/mask.png")
    assert mask.status_code == 200
    assert anon.pixel_array.any() == (client.get(f"/api/v1/predictions/{rid}").json["area_px"] > 0)


def test_seg_download_logs_nothing_from_highdicom(client, positive_dicom, caplog):
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    caplog.clear()
    caplog.set_level(logging.INFO)
    for q in ("", "?deidentify=1"):
        assert client.get(f"/results/{rid}/seg.dcm{q}").status_code == 200
    noisy = [r for r in caplog.records if r.name.startswith(("highdicom", "dicognito"))]
    assert noisy == []


def test_make_seg_rejects_a_mask_of_another_size(positive_dicom):
    from pneumo.errors import UnsupportedDicomError

    with pytest.raises(UnsupportedDicomError, match="does not match"):
        make_seg(positive_dicom.read_bytes(), np.zeros((10, 10), bool), "m", uid_seed="x")


def _with(data: bytes, **values) -> bytes:
    import warnings

    ds = pydicom.dcmread(io.BytesIO(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values on purpose
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


#: Every date, time and coded value the SEG copies from its source (patient and study
#: modules), each with values a real modality has been seen to write.
MALFORMED = [
    ("StudyDate", "2020-01-01"),
    ("StudyDate", "20201301"),
    ("StudyDate", "2020"),
    ("StudyTime", "25:00"),
    ("StudyTime", "1pm"),
    ("PatientBirthDate", "19xx0101"),
    ("PatientBirthDate", "1990-02-30"),
    ("PatientBirthTime", "99"),
    ("SeriesDate", "2020.01.01"),
    ("AcquisitionDateTime", "2020-01-01T10:00"),
    ("PatientSex", "male"),
]


@pytest.mark.parametrize("keyword, value", MALFORMED)
def test_seg_leaves_out_malformed_values_instead_of_failing(positive_dicom, keyword, value):
    """Hardening II item 5: highdicom refuses such values; the SEG is made without them
    (plain and de-identified), and the function the result's note uses names them."""
    import warnings
    from pneumo.io.seg import invalid_copied_values

    data = _with(positive_dicom.read_bytes(), **{keyword: value})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the value it was given
        source = pydicom.dcmread(io.BytesIO(data))
        assert invalid_copied_values(source) == [keyword]
        mask = np.zeros((int(source.Rows), int(source.Columns)), bool)
        mask[100:200, 100:200] = True
        for deidentify in (False, True):
            seg = pydicom.dcmread(
                io.BytesIO(
                    make_seg(
                        data, mask, "m", deidentify=deidentify, uid_seed="result-id-0123456789"
                    )
                )
            )
            assert seg.Modality == "SEG" and str(seg.get(keyword, "") or "") != value
        assert str(source[keyword].value) == value  # the caller's dataset is untouched


def test_result_with_a_malformed_study_date_downloads_its_seg_and_says_so(client, positive_dicom):
    data = _with(positive_dicom.read_bytes(), StudyDate="2020-01-01", StudyTime="25:00")
    rid = result_id_from(upload(client, ("a.dcm", data)))
    for url in (f"/results/{rid}/seg.dcm", f"/results/{rid}/seg.dcm?deidentify=1"):
        resp = client.get(url)
        assert resp.status_code == 200 and pydicom.dcmread(io.BytesIO(resp.data)).Modality == "SEG"
    page = client.get(f"/results/{rid}").data.decode()
    assert "leaves out Study Date, Study Time" in page
    assert "2020-01-01" not in page.split('id="seg-note"')[1][:300]  # names, never values
    plain = result_id_from(upload(client, ("b.dcm", positive_dicom.read_bytes())))
    assert 'id="seg-note"' not in client.get(f"/results/{plain}").data.decode()


def test_seg_of_a_source_without_study_or_series_uids_gets_stable_valid_ones(positive_dicom):
    """A file exported without Study/Series UIDs (some SIIM test images; a PACS refuses a
    SEG without them): the SEG gets valid UIDs derived from the result, the same on every
    render, and references the same source SOP UID it declares."""
    import warnings

    data = _with(
        positive_dicom.read_bytes(),
        StudyInstanceUID="",
        SeriesInstanceUID="",
        SOPInstanceUID="ID_48eca29e9",
    )
    mask = np.zeros(pydicom.dcmread(io.BytesIO(data)).pixel_array.shape, bool)
    mask[10:50, 10:50] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segs = [
            pydicom.dcmread(io.BytesIO(make_seg(data, mask, "m", uid_seed="result-1")))
            for _ in range(2)
        ]
        other = pydicom.dcmread(io.BytesIO(make_seg(data, mask, "m", uid_seed="result-2")))
    seg = segs[0]
    for uid in (
        seg.StudyInstanceUID,
        seg.SeriesInstanceUID,
        seg.SOPInstanceUID,
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID,
        seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID,
    ):
        assert pydicom.uid.UID(str(uid)).is_valid, uid
    assert seg.StudyInstanceUID == segs[1].StudyInstanceUID != other.StudyInstanceUID
