"""Patient names, IDs, birth dates and accession numbers never reach logs, file names or URLs."""

import io
import logging

import pydicom

from helpers.web import result_id_from, upload

PHI = {
    "PatientName": "Zzyzx^Quentin",
    "PatientID": "PHI-TEST-918273",
    "PatientBirthDate": "19230417",
    "AccessionNumber": "ACC-55512",
}


def phi_dicom(source) -> bytes:
    ds = pydicom.dcmread(source)
    for key, value in PHI.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_no_phi_in_logs_files_or_urls(app, client, positive_dicom, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    data = phi_dicom(positive_dicom)
    name = "Zzyzx_Quentin_PHI-TEST-918273.dcm"  # a client file name carrying PHI
    resp = upload(client, (name, data))
    rid = result_id_from(resp)
    urls = [resp.headers["Location"]]
    page = client.get(f"/results/{rid}").data.decode()
    api = client.post(
        "/api/v1/predictions",
        content_type="multipart/form-data",
        data={"files": [(io.BytesIO(data), "upload.dcm")]},
    )
    bad = upload(client, (name, data[: len(data) // 3]))  # error path
    assert bad.status_code == 400
    worklist = client.get("/worklist").data.decode()
    texts = {
        "log": caplog.text,
        "page": page,
        "worklist": worklist,
        "api": api.data.decode(),
        "urls": " ".join(urls),
    }
    files = [str(p) for p in (tmp_path / "data").rglob("*")]
    # the client's file name is shown only to the uploader (their result, worklist and API
    # answers, as the worklist needs), never logged or used on disk
    assert name in page and name in worklist
    assert name not in caplog.text and not any(name in f for f in files)
    for value in PHI.values():
        for where, text in texts.items():
            # identifiers from inside the DICOM never appear; the uploader's own file name may
            assert value not in text.replace(name, ""), f"{value} in {where}"
        assert not any(value in f for f in files)
    other = app.test_client()  # another browser session: neither the result nor the name
    assert other.get(f"/results/{rid}").status_code == 404
    assert name not in other.get("/worklist").data.decode()
    # the uploader can still reveal them on their own result
    assert client.get(f"/results/{rid}/identifiers").json["patient_id"] == PHI["PatientID"]


def test_seg_deidentified_strips_phi(client, positive_dicom):
    import highdicom as hd

    rid = result_id_from(upload(client, ("a.dcm", phi_dicom(positive_dicom))))
    seg = client.get(f"/results/{rid}/seg.dcm?deidentify=1").data
    for value in PHI.values():
        assert value.encode() not in seg
    full = client.get(f"/results/{rid}/seg.dcm").data
    assert PHI["PatientID"].encode() in full  # the clinical SEG keeps the patient link
    assert hd.seg.segread(io.BytesIO(seg)).PatientIdentityRemoved == "YES"
