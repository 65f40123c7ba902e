"""PACS integration over DICOMweb, against a real Orthanc (Debian's orthanc + orthanc-dicomweb).

Orthanc runs on free loopback ports with a temporary storage folder, a generated
configuration with basic auth, the DICOMweb plugin and a DICOMweb server entry
pointing at the app (gunicorn through LocalServer, tiny untrained model). Real
SIIM DICOMs go into Orthanc, Orthanc pushes them to the app with its own
DICOMweb client, and the app's SEG must come back into Orthanc.
"""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from helpers.localserver import LocalServer, free_port
from helpers.orthanc import NOT_INSTALLED, ORTHANC_PASSWORD, ORTHANC_USER, Orthanc, _orthanc_binary


def with_study(data: bytes, **changes) -> bytes:
    """A copy of a DICOM with new study/series/instance UIDs (so tests never collide)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    for key, value in changes.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def non_image_dicom(study_uid: str | None = None) -> bytes:
    """A real-world non-image instance: a Basic Text SR with no Pixel Data."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID = study_uid or pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "SR", "SR-TEST-1", "Report^Only"
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def colour_dicom(source: bytes) -> bytes:
    """A real SIIM DICOM turned into an RGB image (not a greyscale radiograph)."""
    ds = pydicom.dcmread(io.BytesIO(source))
    grey = ds.pixel_array
    ds.PixelData = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc_installed():
    if _orthanc_binary() is None:
        pytest.skip(NOT_INSTALLED)


@pytest.fixture(scope="module")
def app_instance(tmp_path_factory):
    return make_instance(tmp_path_factory.mktemp("pacs-app"))


def make_instance(folder: Path) -> tuple[Path, str]:
    """An instance folder with a user and an API token (the token's user owns results)."""
    from app.store.repository import Store

    store = Store(folder / "data")
    store.init()
    store.accounts.create("radiologist", "a-long-password-1")
    return folder, store.accounts.create_token("radiologist")


@pytest.fixture(scope="module")
def pacs_world(orthanc_installed, app_instance, tiny_model_folder, tmp_path_factory):
    """gunicorn (the app) and Orthanc, each configured with the other."""
    folder, token = app_instance
    orthanc_http = free_port()
    server = LocalServer(
        tiny_model_folder,
        folder,
        env={
            "PNEUMO_DICOMWEB_URL": f"http://127.0.0.1:{orthanc_http}/dicom-web",
            "PNEUMO_DICOMWEB_USERNAME": ORTHANC_USER,
            "PNEUMO_DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
            "PNEUMO_DICOMWEB_AUTOSEND": "1",
            "PNEUMO_WARM_UP": "false",
        },
    )
    try:
        orthanc = Orthanc(
            tmp_path_factory.mktemp("orthanc"),
            http_port=orthanc_http,
            servers={
                "pneumo": {
                    "Url": f"{server.url}/dicomweb/",
                    "HttpHeaders": {"Authorization": f"Bearer {token}"},
                },
                "pneumo-badtoken": {
                    "Url": f"{server.url}/dicomweb/",
                    "HttpHeaders": {"Authorization": "Bearer pn_not-a-real-token"},
                },
            },
        )
    except BaseException:
        server.stop()
        raise
    yield server, orthanc, token
    orthanc.stop()
    server.stop()


def api_results(server, token) -> list[dict]:
    r = requests.get(
        server.url + "/api/v1/predictions", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    r.raise_for_status()
    return r.json()["results"]


def wait_for(check, timeout: float = 90.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return check()


# -- (1) push: Orthanc -> app (STOW-RS) -> SEG back into Orthanc ---------------------


@pytest.mark.slow  # starts a real Orthanc
def test_orthanc_pushes_study_and_seg_comes_back(pacs_world, positive_dicom, capsys):
    import highdicom as hd

    server, orthanc, token = pacs_world
    data = with_study(positive_dicom.read_bytes())
    src = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    stored = orthanc.upload(data)
    before = len(api_results(server, token))

    t0 = time.perf_counter()
    resp = orthanc.stow_to("pneumo", [stored["ParentStudy"]])
    t_stow = time.perf_counter() - t0
    assert resp.ok, resp.text
    segs = wait_for(lambda: orthanc.segs_in_study(str(src.StudyInstanceUID)))
    t_back = time.perf_counter() - t0
    assert len(segs) == 1, "the SEG did not arrive back in Orthanc"
    with capsys.disabled():
        print(
            f"\nround trip (tiny model): Orthanc STOW -> app analysed {t_stow:.2f} s, "
            f"SEG back in Orthanc {t_back:.2f} s"
        )

    results = api_results(server, token)
    assert len(results) == before + 1  # the token's user owns the result
    seg_uid = segs[0]["00080018"]["Value"][0]
    series_uid = segs[0]["0020000E"]["Value"][0]
    seg = hd.seg.segread(io.BytesIO(orthanc.instance_file(seg_uid)))
    assert seg.SeriesInstanceUID == series_uid
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert seg.PatientID == src.PatientID  # the clinical SEG keeps the patient link

    # a resend (the button, through the API token) replaces: still one SEG, same UID
    rid = results[0]["id"]
    again = requests.post(
        f"{server.url}/results/{rid}/pacs/send",
        allow_redirects=False,
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert again.status_code == 303
    state = requests.get(
        f"{server.url}/results/{rid}/pacs", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    assert state["state"] == "sent" and state["attempts"] == 2, state
    assert state["seg_sop_instance_uid"] == seg_uid
    segs = orthanc.segs_in_study(str(src.StudyInstanceUID))
    assert [s["00080018"]["Value"][0] for s in segs] == [seg_uid]

    # beside the SEG, the Structured Report and the Secondary Capture are in the study,
    # once each (resends replace), the same objects as the result page's downloads
    instances = requests.get(
        f"{orthanc.dicomweb_url}/studies/{src.StudyInstanceUID}/instances",
        auth=orthanc.auth,
        timeout=60,
    ).json()
    by_class = {}
    for item in instances:
        by_class.setdefault(item["00080016"]["Value"][0], []).append(item["00080018"]["Value"][0])
    sr_uids = by_class.get("1.2.840.10008.5.1.4.1.1.88.33", [])
    sc_uids = [
        u for u in by_class.get("1.2.840.10008.5.1.4.1.1.7", []) if u != str(src.SOPInstanceUID)
    ]  # SIIM's films are Secondary Captures too
    assert len(sr_uids) == 1 and len(sc_uids) == 1, by_class
    auth = {"Authorization": f"Bearer {token}"}
    for kind, uid in (("sr", sr_uids[0]), ("sc", sc_uids[0])):
        download = requests.get(f"{server.url}/results/{rid}/{kind}.dcm", headers=auth, timeout=60)
        assert download.status_code == 200
        assert (
            download.content == orthanc.instance_file(uid)
            or pydicom.dcmread(io.BytesIO(download.content)).SOPInstanceUID == uid
        )
    sr = hd.sr.srread(io.BytesIO(orthanc.instance_file(sr_uids[0])))
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    referenced = set()

    def walk(ds):
        for element in ds:
            if element.keyword == "ReferencedSOPInstanceUID":
                referenced.add(str(element.value))
            elif element.VR == "SQ":
                for item in element.value:
                    walk(item)

    walk(sr)
    assert seg_uid in referenced and str(src.SOPInstanceUID) in referenced
    sc = pydicom.dcmread(io.BytesIO(orthanc.instance_file(sc_uids[0])))
    assert sc.BurnedInAnnotation == "YES" and sc.SamplesPerPixel == 3


@pytest.mark.slow
@pytest.mark.bundled
def test_round_trip_with_bundled_model(orthanc_installed, positive_dicom, tmp_path, capsys):
    """The same push -> analyse -> SEG back with the bundled model (timings printed)."""
    import highdicom as hd
    from pneumo.paths import default_model_dir

    folder, token = make_instance(tmp_path / "instance")
    orthanc_http = free_port()
    server = LocalServer(
        default_model_dir(),
        folder,
        env={
            "PNEUMO_DICOMWEB_URL": f"http://127.0.0.1:{orthanc_http}/dicom-web",
            "PNEUMO_DICOMWEB_USERNAME": ORTHANC_USER,
            "PNEUMO_DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
            "PNEUMO_DICOMWEB_AUTOSEND": "1",
        },
    )
    orthanc = None
    try:
        orthanc = Orthanc(
            tmp_path / "orthanc",
            http_port=orthanc_http,
            servers={
                "pneumo": {
                    "Url": f"{server.url}/dicomweb/",
                    "HttpHeaders": {"Authorization": f"Bearer {token}"},
                }
            },
        )
        timings = []
        for _ in range(2):  # the first request also pays for any lazy set-up
            data = with_study(positive_dicom.read_bytes())
            src = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            stored = orthanc.upload(data)
            t0 = time.perf_counter()
            assert orthanc.stow_to("pneumo", [stored["ParentStudy"]]).ok
            t_stow = time.perf_counter() - t0
            study_uid = str(src.StudyInstanceUID)
            segs = wait_for(lambda uid=study_uid: orthanc.segs_in_study(uid), every=0.05)
            timings.append((t_stow, time.perf_counter() - t0))
            assert len(segs) == 1
        seg = hd.seg.segread(io.BytesIO(orthanc.instance_file(segs[0]["00080018"]["Value"][0])))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
        assert "double_unet" in seg.SegmentSequence[0].SegmentAlgorithmName
        with capsys.disabled():
            for i, (stow, back) in enumerate(timings, 1):
                print(
                    f"\nround trip {i} (bundled model, gunicorn cold start "
                    f"{server.cold_start_s:.1f} s): Orthanc STOW -> analysed {stow:.2f} s, "
                    f"SEG back in Orthanc {back:.2f} s"
                )
    finally:
        if orthanc is not None:
            orthanc.stop()
        server.stop()


# -- (3) bad input through the real servers --------------------------------------------


@pytest.mark.slow  # starts a real Orthanc
def test_orthanc_push_with_wrong_token_is_refused(pacs_world, positive_dicom):
    server, orthanc, token = pacs_world
    stored = orthanc.upload(with_study(positive_dicom.read_bytes()))
    before = len(api_results(server, token))
    resp = orthanc.stow_to("pneumo-badtoken", [stored["ParentStudy"]])
    assert not resp.ok  # Orthanc reports the app's 401
    assert len(api_results(server, token)) == before


@pytest.mark.slow  # starts a real Orthanc
def test_orthanc_push_of_non_image_is_refused_with_reason(pacs_world, positive_dicom):
    server, orthanc, token = pacs_world
    stored = orthanc.upload(non_image_dicom())
    before = len(api_results(server, token))
    resp = orthanc.stow_to("pneumo", [stored["ParentStudy"]])
    assert not resp.ok, resp.text  # the app answered 409 with a Failed SOP Sequence
    assert len(api_results(server, token)) == before


@pytest.mark.slow  # starts a real Orthanc
def test_dicomweb_client_stow_mixed_batch(pacs_world, positive_dicom):
    """A maintained DICOMweb client against the app: one good, one report, one colour image."""
    from dicomweb_client.api import DICOMwebClient

    server, _orthanc, token = pacs_world
    good = with_study(positive_dicom.read_bytes())
    study = str(pydicom.dcmread(io.BytesIO(good)).StudyInstanceUID)
    instances = [
        pydicom.dcmread(io.BytesIO(b)) for b in (good, non_image_dicom(study), colour_dicom(good))
    ]
    client = DICOMwebClient(f"{server.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
    client.set_http_retry_params(retry=False)
    resp = client.store_instances(instances)
    assert [i.ReferencedSOPInstanceUID for i in resp.ReferencedSOPSequence] == [
        instances[0].SOPInstanceUID
    ]
    failed = {i.ReferencedSOPInstanceUID: i.FailureReason for i in resp.FailedSOPSequence}
    assert failed == {instances[1].SOPInstanceUID: 0x0122, instances[2].SOPInstanceUID: 0xA900}


# -- (2) pull: app -> Orthanc (QIDO-RS + WADO-RS) ---------------------------------------


@pytest.fixture()
def orthanc(orthanc_installed, tmp_path):
    server = Orthanc(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.fixture()
def pacs_app(tmp_path, tiny_predictor, orthanc):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "DATA_DIR": str(tmp_path / "data"),
            "PREDICTOR": tiny_predictor,
            "MAX_FILES": 5,
            "DICOMWEB_URL": orthanc.dicomweb_url,
            "DICOMWEB_USERNAME": ORTHANC_USER,
            "DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
            "DICOMWEB_TIMEOUT": 10,
        }
    )
    return app


def _csrf(client) -> str:
    client.get("/login")
    with client.session_transaction() as s:
        s.setdefault("csrf", "test-token")
        return s["csrf"]


@pytest.mark.slow  # starts a real Orthanc
def test_pull_study_from_orthanc(pacs_app, orthanc, positive_dicom):
    from pneumo.io.seg import make_seg

    data = with_study(
        positive_dicom.read_bytes(),
        PatientID="PULL-TEST-42",
        AccessionNumber="ACC-PULL-1",
        StudyDate="20240115",
    )
    orthanc.upload(data)
    src = pydicom.dcmread(io.BytesIO(data))
    # an earlier SEG in the same study must be skipped, not analysed
    orthanc.upload(make_seg(src, np.zeros((src.Rows, src.Columns), bool), "earlier"))
    orthanc.upload(with_study(positive_dicom.read_bytes(), PatientID="SOMEONE-ELSE"))
    client = pacs_app.test_client()

    page = client.get("/pacs?patient_id=PULL-TEST-42&date_from=2024-01-01&date_to=2024-01-31")
    assert page.status_code == 200, page.data
    html = page.data.decode()
    assert str(src.StudyInstanceUID) in html and "SOMEONE-ELSE" not in html
    assert "ACC-PULL-1" in html and "From PACS" in html
    empty = client.get("/pacs?accession=NO-SUCH-ACCESSION").data.decode()
    assert 'id="pacs-none"' in empty

    resp = client.post(
        "/pacs/import", data={"study": str(src.StudyInstanceUID), "csrf_token": _csrf(client)}
    )
    assert resp.status_code == 303, resp.data
    rid = resp.headers["Location"].rsplit("/", 1)[-1]
    result = client.get(f"/results/{rid}").data.decode()
    assert "Send to PACS" in result
    assert client.get(f"/results/{rid}/identifiers").json["patient_id"] == "PULL-TEST-42"
    pixels = client.get(f"/results/{rid}/files/image.png")
    assert pixels.status_code == 200


@pytest.mark.slow  # starts a real Orthanc
def test_pacs_pull_command_line(
    orthanc, positive_dicom, tiny_model_folder, tmp_path, monkeypatch, capsys
):
    from app import cli
    from app.store.repository import Store

    data = with_study(positive_dicom.read_bytes())
    orthanc.upload(data)
    study = str(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID)
    store = Store(tmp_path / "data")
    store.init()
    store.accounts.create("alice", "a-long-password-1")
    for key, value in {
        "PNEUMO_INSTANCE_DIR": tmp_path,
        "PNEUMO_DATA_DIR": tmp_path / "data",
        "PNEUMO_MODEL_DIR": tiny_model_folder,
        "PNEUMO_DICOMWEB_URL": orthanc.dicomweb_url,
        "PNEUMO_DICOMWEB_USERNAME": ORTHANC_USER,
        "PNEUMO_DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
    }.items():
        monkeypatch.setenv(key, str(value))
    assert cli.main(["pacs", "pull", "--study", study, "--user", "alice"]) == 0
    out = capsys.readouterr().out
    rid = out.split("\t", 1)[0]
    assert store.results.get_any(rid).owner.startswith("user:")
    assert cli.main(["pacs", "pull", "--study", "1.2.3.4.5.404", "--user", "alice"]) == 1
    assert "no study" in capsys.readouterr().err


# -- (3) the PACS is down: the failure is shown, kept, and retried -----------------------


@pytest.mark.slow  # starts a real Orthanc
def test_pacs_down_failure_is_shown_and_retried(
    orthanc_installed, tmp_path, tiny_predictor, positive_dicom, monkeypatch, capsys
):
    from app import cli, create_app

    orthanc = Orthanc(tmp_path / "orthanc")
    orthanc.stop()  # down from the start
    try:
        config = {
            "TESTING": True,
            "SECRET_KEY": "test",
            "DATA_DIR": str(tmp_path / "data"),
            "PREDICTOR": tiny_predictor,
            "DICOMWEB_URL": orthanc.dicomweb_url,
            "DICOMWEB_USERNAME": ORTHANC_USER,
            "DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
            "DICOMWEB_AUTOSEND": "1",
            "DICOMWEB_TIMEOUT": 5,
            "DICOMWEB_RETRY_AFTER": 2.0,
        }
        app = create_app(config)
        client = app.test_client()
        data = with_study(positive_dicom.read_bytes())
        resp = client.post(
            "/upload",
            content_type="multipart/form-data",
            data={"files": [(io.BytesIO(data), "chest.dcm")], "csrf_token": _csrf(client)},
        )
        assert resp.status_code == 303  # the analysis never waits for the PACS
        rid = resp.headers["Location"].rsplit("/", 1)[-1]
        sender = app.extensions["pneumo"].sender
        sender.wait()
        store = app.extensions["pneumo"].store
        state = store.sends.state(rid)
        assert state.state == "failed" and state.attempts == 1
        assert "could not be reached" in state.last_error
        page = client.get(f"/results/{rid}").data.decode()
        assert "Sending failed" in page and "could not be reached" in page and "Retry now" in page

        # a new app process (restart) finds the failed send and retries it: still down
        create_app(config).extensions["pneumo"].sender.wait()
        assert store.sends.state(rid).attempts == 2

        client.get(f"/results/{rid}")  # too soon after the last attempt: no retry
        sender.wait()
        assert store.sends.state(rid).attempts == 2
        # the wait doubles with each failure: 2 s after the first, 4 s after the second
        state = store.sends.state(rid)
        assert 3.9 <= state.next_attempt - state.updated <= 4.1
        time.sleep(2.1)  # past DICOMWEB_RETRY_AFTER but not past the back-off: no retry
        client.get(f"/results/{rid}")
        sender.wait()
        assert store.sends.state(rid).attempts == 2
        time.sleep(max(0.0, state.next_attempt - time.time()) + 0.1)
        client.get(f"/results/{rid}")  # due now: the page view retries (still down)
        sender.wait()
        assert store.sends.state(rid).attempts == 3

        orthanc.start()  # the PACS is back
        state = store.sends.state(rid)
        time.sleep(max(0.0, state.next_attempt - time.time()) + 0.1)
        client.get(f"/results/{rid}")
        sender.wait()
        state = store.sends.state(rid)
        assert state.state == "sent" and state.attempts == 4 and state.last_error is None
        study = str(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID)
        assert len(orthanc.segs_in_study(study)) == 1
        assert "Segmentation stored on the PACS" in client.get(f"/results/{rid}").data.decode()

        # the command line: send one result again, then retry (nothing left to do)
        for key, value in {
            "PNEUMO_INSTANCE_DIR": tmp_path,
            "PNEUMO_DATA_DIR": tmp_path / "data",
            "PNEUMO_DICOMWEB_URL": orthanc.dicomweb_url,
            "PNEUMO_DICOMWEB_USERNAME": ORTHANC_USER,
            "PNEUMO_DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
        }.items():
            monkeypatch.setenv(key, str(value))
        assert cli.main(["pacs", "send", "--result", rid]) == 0
        assert f"{rid}: sent" in capsys.readouterr().out
        assert cli.main(["pacs", "retry"]) == 0
        assert store.sends.state(rid).attempts == 5
        assert len(orthanc.segs_in_study(study)) == 1  # resends replace, never duplicate
    finally:
        orthanc.stop()


# -- receiver details without Orthanc ----------------------------------------------------


def _related(*parts: bytes, boundary: str | None = None) -> tuple[bytes, str]:
    boundary = boundary or uuid.uuid4().hex
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
            for p in parts
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


@pytest.fixture()
def token_client(app):
    app.extensions["pneumo"].store.accounts.create("pacs", "a-long-password-1")
    token = app.extensions["pneumo"].store.accounts.create_token("pacs")
    return app.test_client(), {"Authorization": f"Bearer {token}"}


def test_stow_answers_in_dicom_json(token_client, positive_dicom):
    client, auth = token_client
    good = with_study(positive_dicom.read_bytes())
    body, ctype = _related(good, b"not a dicom at all")
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype, headers=auth)
    assert resp.status_code == 202 and resp.mimetype == "application/dicom+json"
    ds = pydicom.Dataset.from_json(resp.json)
    assert (
        ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID
    )
    assert ds.FailedSOPSequence[0].FailureReason == 0xC000
    assert "Not a DICOM" in resp.headers["Warning"]
    listed = client.get("/api/v1/predictions", headers=auth).json["results"]
    assert len(listed) == 1

    all_bad, ctype = _related(non_image_dicom())
    resp = client.post("/dicomweb/studies", data=all_bad, content_type=ctype, headers=auth)
    assert resp.status_code == 409
    assert pydicom.Dataset.from_json(resp.json).FailedSOPSequence[0].FailureReason == 0x0122


def test_stow_refusals(token_client, positive_dicom):
    client, auth = token_client
    body, ctype = _related(positive_dicom.read_bytes())
    no_token = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert no_token.status_code == 401 and "WWW-Authenticate" in no_token.headers
    wrong = client.post(
        "/dicomweb/studies",
        data=body,
        content_type=ctype,
        headers={"Authorization": "Bearer pn_wrong"},
    )
    assert wrong.status_code == 401
    form = client.post("/dicomweb/studies", data={"x": "1"}, headers=auth)
    assert form.status_code == 415
    json_parts = client.post(
        "/dicomweb/studies",
        data=body,
        headers=auth,
        content_type=ctype.replace("application/dicom", "application/dicom+json"),
    )
    assert json_parts.status_code == 415
    many, many_type = _related(*[b"x"] * 6)  # MAX_FILES is 5 in the test app
    assert (
        client.post(
            "/dicomweb/studies", data=many, content_type=many_type, headers=auth
        ).status_code
        == 413
    )
    other_study = client.post(
        "/dicomweb/studies/1.2.3", data=body, content_type=ctype, headers=auth
    )
    assert other_study.status_code == 409
    assert pydicom.Dataset.from_json(other_study.json).FailedSOPSequence[0].FailureReason == 0xA900
    assert client.get("/api/v1/predictions", headers=auth).json["results"] == []


def test_openapi_documents_stow(client):
    doc = client.get("/api/v1/openapi.json").json
    post = doc["paths"]["/dicomweb/studies"]["post"]
    assert {"200", "202", "409", "401", "413", "415"} <= set(post["responses"])


def test_pacs_settings_are_checked():
    from app.settings import Settings

    def from_config(config):  # a test's mapping, parsed as the environment would be
        return Settings.from_mapping(config, env={}).pacs

    ok = from_config(
        {
            "DICOMWEB_URL": "http://pacs:8042/dicom-web/",
            "DICOMWEB_AUTOSEND": 1,
            "DICOMWEB_PASSWORD": 1234,
            "DICOMWEB_USERNAME": "u",
        }
    )
    assert ok.url == "http://pacs:8042/dicom-web" and ok.autosend and ok.password == "1234"
    for bad in (
        {"DICOMWEB_URL": "pacs:8042"},
        {"DICOMWEB_AUTOSEND": "maybe"},
        {"DICOMWEB_TIMEOUT": "soon"},
        {"DICOMWEB_TOKEN": "t", "DICOMWEB_USERNAME": "u"},
    ):
        with pytest.raises(ValueError, match="PNEUMO_DICOMWEB"):
            from_config(bad)
    assert not from_config({}).configured


def test_no_pacs_configured(client, positive_dicom):
    assert "No PACS is connected" in client.get("/pacs").data.decode()
    assert "From PACS" not in client.get("/").data.decode()


def test_stow_of_a_ct_slice_is_refused_as_not_a_chest_film(token_client):
    """A STOW-RS push of a CT instance gets no verdict: Failed SOP with 0xA900 and the reason."""
    from pathlib import Path
    from pydicom.data import get_testdata_file

    client, auth = token_client
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    body, ctype = _related(ct)
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype, headers=auth)
    assert resp.status_code == 409
    failed = pydicom.Dataset.from_json(resp.json).FailedSOPSequence[0]
    assert failed.FailureReason == 0xA900
    assert failed.ReferencedSOPInstanceUID == pydicom.dcmread(io.BytesIO(ct)).SOPInstanceUID
    assert "not a frontal chest X-ray (Modality (0008,0060) is CT" in resp.headers["Warning"]
    assert client.get("/api/v1/predictions", headers=auth).json["results"] == []


# -- (4) the reviewer's verdict and outline reach the PACS beside the model's (issue 35) ----


def _instances(orthanc, study: str) -> dict[str, list[pydicom.Dataset]]:
    """Every instance of a study in Orthanc, read back, by modality."""
    found = requests.get(
        f"{orthanc.dicomweb_url}/studies/{study}/instances", auth=orthanc.auth, timeout=60
    ).json()
    by_modality: dict[str, list[pydicom.Dataset]] = {}
    for item in found:
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(item["00080018"]["Value"][0])))
        by_modality.setdefault(str(ds.Modality), []).append(ds)
    return by_modality


@pytest.mark.slow  # starts a real Orthanc
def test_a_review_reaches_the_pacs_beside_the_models_objects(
    orthanc, tiny_predictor, tmp_path, positive_dicom
):
    import base64

    from PIL import Image

    from app import create_app
    from helpers.web import post

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k" * 32,
            "DATA_DIR": str(tmp_path / "data"),
            "PREDICTOR": tiny_predictor,
            "WARM_UP": False,
            "DICOMWEB_URL": orthanc.dicomweb_url,
            "DICOMWEB_USERNAME": ORTHANC_USER,
            "DICOMWEB_PASSWORD": ORTHANC_PASSWORD,
            "DICOMWEB_AUTOSEND": "1",
            "DICOMWEB_TIMEOUT": 10,
        }
    )
    services = app.extensions["pneumo"]
    services.store.accounts.create("alice", "correct horse battery", "A")  # the team's admin
    services.store.accounts.create("carol", "correct horse battery", "A", "uploader")
    carol = {"Authorization": f"Bearer {services.store.accounts.create_token('carol')}"}
    alice = {"Authorization": f"Bearer {services.store.accounts.create_token('alice')}"}
    client = app.test_client()
    data = with_study(positive_dicom.read_bytes())
    study = str(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID)
    resp = client.post(
        "/api/v1/predictions", headers=carol, data={"file": (io.BytesIO(data), "chest.dcm")}
    )
    assert resp.status_code == 201, resp.get_json()
    rid = resp.get_json()["results"][0]["id"]
    services.sender.wait()
    model = _instances(orthanc, study)
    assert len(model["SEG"]) == 1 and len(model["SR"]) == 1  # the model's, sent on upload
    model_seg_uid = model["SEG"][0].SOPInstanceUID

    # alice draws the pneumothorax the model missed: her SEG and her SR follow
    row = services.store.results.get_any(rid)
    shape = (row.meta["rows"], row.meta["columns"])
    rgba = np.zeros(shape + (4,), np.uint8)
    rgba[300:500, 100:260] = 255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    mask_png = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    review = client.post(
        f"/api/v1/predictions/{rid}/review",
        headers=alice,
        json={"agrees": False, "reason": "missed", "mask_png": mask_png},
    )
    assert review.status_code == 201, review.get_json()
    services.sender.wait()
    after = _instances(orthanc, study)
    assert len(after["SEG"]) == 2 and len(after["SR"]) == 2
    (theirs,) = [s for s in after["SEG"] if s.SOPInstanceUID != model_seg_uid]
    assert str(theirs.ContentCreatorName) == "alice^" and theirs.SeriesNumber == 902
    assert theirs.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    frame = theirs.pixel_array.reshape(shape).astype(bool)
    assert frame[300:500, 100:260].all() and frame.sum() == 200 * 160
    (verdict,) = [s for s in after["SR"] if s.SeriesNumber == 903]
    assert verdict.VerificationFlag == "VERIFIED"
    codes = {str(element.value) for element in verdict.iterall() if element.keyword == "CodeValue"}
    assert {"52101004", "MISSED"} <= codes  # Pneumothorax: Present, by alice
    referenced = {
        str(e.value) for e in verdict.iterall() if e.keyword == "ReferencedSOPInstanceUID"
    }
    assert theirs.SOPInstanceUID in referenced
    page = client.get(f"/results/{rid}", headers=alice).data.decode()
    assert "With alice&#39;s review" in page or "With alice's review" in page

    # her later review (agreeing, without drawing) is a new report; the PACS keeps both
    assert (
        post(client, "/login", username="alice", password="correct horse battery").status_code
        == 303
    )
    assert post(client, f"/results/{rid}/review", verdict="agree").status_code == 303
    services.sender.wait()
    last = _instances(orthanc, study)
    assert len(last["SEG"]) == 2 and len(last["SR"]) == 3
    audit = [e for e in services.store.audit.events(team_id=row.team_id) if e.action == "send"]
    assert any("with the review by alice" in (e.detail or "") for e in audit)
