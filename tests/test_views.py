"""The pages, uploads, downloads, accounts and the JSON API (app.views, app.api,
app.access) through Flask's test client, with a tiny model."""

import io
import json
from pathlib import Path
import re

import numpy as np
import pydicom
import pytest
from PIL import Image

from pneumo.io import rle
from conftest import SIIM
from helpers.web import csrf, post, result_id_from, upload, user_app


def test_pages_render(client):
    assert client.get("/").status_code == 200
    assert b"Drop DICOM, PNG or JPEG" in client.get("/").data
    assert client.get("/worklist").status_code == 200
    assert client.get("/healthz").json == {"status": "ok"}
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301 and client.get(icon.location).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "tiny_untrained" in ready.json["model"]


def test_upload_dicom_result_page_and_downloads(client, positive_dicom):
    resp = upload(client, ("study.dcm", positive_dicom.read_bytes()))
    assert resp.status_code == 303
    rid = result_id_from(resp)
    page = client.get(f"/results/{rid}")
    assert page.status_code == 200
    html = page.data.decode()
    assert "Pneumothorax suspected" in html and "Operating point" in html
    assert "<strong>balanced</strong>: suspected at" in html and "sensitivity 80 %" in html
    # the tiny test model has no calibration: its number is called a score, not a probability
    assert "(uncalibrated, not a probability)" in html and "Probability of" not in html
    # SIIM files keep the full-size film's spacing: no cm², and the page says why
    area = re.search(r'<dd id="area">(.*?)</dd>', html, re.S).group(1)
    assert re.match(r"\d+ px", area) and "no cm²: pixel spacing implausible" in area
    assert re.search(r"would be 1[0-9]\.[0-9] cm wide", area)
    assert "Decision support, not a diagnosis" in html and "heat map colour scale" in html
    # one rule for the outline and the starting opacity, shared with pneumo.inference.overlay
    from pneumo.inference import overlay as ov

    assert f'data-contour-width="{ov.contour_width((1024, 1024))}"' in html
    assert (
        f'id="opacity" type="range" min="0" max="100" value="{round(100 * ov.DEFAULT_OPACITY)}"'
        in html
    )
    worklist = client.get("/worklist").data.decode()
    assert "study.dcm" in worklist and re.search(r"<td>\d{4}-\d{2}-\d{2}</td>", worklist)
    ds = pydicom.dcmread(positive_dicom)
    assert str(ds.PatientID) not in html  # identifiers hidden until revealed
    ids = client.get(f"/results/{rid}/identifiers").json
    assert ids["patient_id"] == str(ds.PatientID)
    # downloads agree with each other
    mask = (
        np.asarray(Image.open(io.BytesIO(client.get(f"/results/{rid}/files/mask.png").data))) > 127
    )
    text = client.get(f"/results/{rid}/files/mask_rle.txt").data.decode().strip()
    assert np.array_equal(rle.decode(text, mask.shape), mask) and mask.any()
    overlay = Image.open(io.BytesIO(client.get(f"/results/{rid}/files/overlay.png").data))
    assert overlay.size == (1024, 1024) and overlay.mode == "RGB"
    for name in ("image.png", "prob.png", "thumb.jpg"):
        assert client.get(f"/results/{rid}/files/{name}").status_code == 200
    assert client.get(f"/results/{rid}/files/../../secret_key").status_code == 404


def test_seg_download_round_trip(client, positive_dicom):
    import highdicom as hd

    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    mask = (
        np.asarray(Image.open(io.BytesIO(client.get(f"/results/{rid}/files/mask.png").data))) > 127
    )
    resp = client.get(f"/results/{rid}/seg.dcm")
    assert resp.status_code == 200 and resp.mimetype == "application/dicom"
    seg = hd.seg.segread(io.BytesIO(resp.data))
    src = pydicom.dcmread(positive_dicom)
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert np.array_equal(seg.pixel_array.astype(bool), mask)
    anon = hd.seg.segread(io.BytesIO(client.get(f"/results/{rid}/seg.dcm?deidentify=1").data))
    assert str(anon.PatientID) != str(src.PatientID) and anon.PatientIdentityRemoved == "YES"
    assert np.array_equal(anon.pixel_array.astype(bool), mask)


def test_png_upload_has_no_seg_and_pixel_area(client):
    png = next(SIIM.glob("ktlProject0/data/train/images/*.png")).read_bytes()
    rid = result_id_from(upload(client, ("x.png", png)))
    html = client.get(f"/results/{rid}").data.decode()
    assert "no pixel spacing" in html and "seg.dcm" not in html
    assert client.get(f"/results/{rid}/seg.dcm").status_code == 404


@pytest.mark.parametrize(
    "name,content,status,words",
    [
        ("notes.txt", b"hello, I am not an X-ray" * 20, 415, "not a DICOM, PNG or JPEG"),
        ("empty.dcm", b"", 400, None),
        ("half.dcm", None, 400, "truncated"),
    ],
)
def test_bad_files_get_friendly_pages(client, positive_dicom, name, content, status, words):
    if content is None:
        data = positive_dicom.read_bytes()
        content = data[: len(data) // 2]
    resp = upload(client, (name, content))
    assert resp.status_code == status
    html = resp.data.decode()
    assert "Not analysed" in html and name in html and "Traceback" not in html
    if words:
        assert words in html


def test_no_pixel_data_and_colour_dicom(client):
    from pydicom.data import get_testdata_file

    for fname, status in (("rtplan.dcm", 422), ("SC_rgb.dcm", 422), ("emri_small.dcm", 422)):
        with open(get_testdata_file(fname), "rb") as fh:
            resp = upload(client, (fname, fh.read()))
        assert resp.status_code == status, fname


def test_empty_form_and_too_many_files(client, positive_dicom):
    resp = client.post(
        "/upload", data={"csrf_token": csrf(client)}, content_type="multipart/form-data"
    )
    assert resp.status_code == 400 and b"No file was chosen" in resp.data
    data = positive_dicom.read_bytes()
    resp = upload(client, *[(f"{i}.dcm", data) for i in range(6)])
    assert resp.status_code == 413 and b"at most 5" in resp.data


def test_request_too_large(app, positive_dicom):
    app.config["MAX_CONTENT_LENGTH"] = 100_000
    client = app.test_client()
    resp = upload(client, ("big.dcm", positive_dicom.read_bytes() * 2))
    assert resp.status_code == 413 and b"too large" in resp.data
    api = upload(client, ("big.dcm", positive_dicom.read_bytes() * 2), url="/api/v1/predictions")
    assert api.status_code == 413 and api.json["error"]["message"]


def test_batch_keeps_good_files_when_one_is_bad(client, positive_dicom):
    resp = upload(client, ("good.dcm", positive_dicom.read_bytes()), ("bad.dcm", b"junk" * 50))
    assert resp.status_code == 303 and "/batches/" in resp.headers["Location"]
    html = client.get(resp.headers["Location"]).data.decode()  # a reload gives the same page
    assert "Batch of 2 files" in html and "1 analysed, 1 not analysed" in html
    assert "Not analysed" in html and "bad.dcm" in html and "good.dcm" in html
    assert len(client.get("/api/v1/predictions").json["results"]) == 1


def test_batch_page_orders_filters_and_stays_with_its_owner(app, client, positive_dicom):
    png = next(SIIM.glob("ktlProject0/data/train/images/*.png")).read_bytes()
    resp = upload(
        client,
        ("first.dcm", positive_dicom.read_bytes()),
        ("second.png", png),
        ("third.dcm", positive_dicom.read_bytes()),
    )
    url = resp.headers["Location"]
    batch_id = url.rsplit("/", 1)[1]
    rows = app.extensions["pneumo"].store.results.list(
        next(r.owner for r in _rows(app.extensions["pneumo"].store)), "upload", batch=batch_id
    )
    assert [r.file_name for r in rows] == ["first.dcm", "second.png", "third.dcm"]
    by_prob = client.get(url).data.decode()
    names = [n for n in ("first.dcm", "second.png", "third.dcm")]
    shown = sorted(names, key=lambda n: by_prob.index(f'title="{n}"'))
    probs = {r.file_name: r.probability for r in rows}
    assert [probs[n] for n in shown] == sorted(probs.values(), reverse=True)
    upload_order = client.get(url + "?order=upload").data.decode()
    assert sorted(names, key=lambda n: upload_order.index(f'title="{n}"')) == names
    assert 'src="/results/' in by_prob and "thumb.jpg" in by_prob
    listed = client.get(f"/worklist?batch={batch_id}").data.decode()
    assert "Showing one batch only" in listed and all(n in listed for n in names)
    single = result_id_from(upload(client, ("alone.dcm", positive_dicom.read_bytes())))
    assert single not in client.get(f"/worklist?batch={batch_id}").data.decode()
    assert app.test_client().get(url).status_code == 404  # another browser session
    api = upload(
        client,
        ("a.dcm", positive_dicom.read_bytes()),
        ("b.dcm", positive_dicom.read_bytes()),
        url="/api/v1/predictions",
    ).json
    assert api["batch"] and {r["batch"] for r in api["results"]} == {api["batch"]}
    one = upload(client, ("c.dcm", positive_dicom.read_bytes()), url="/api/v1/predictions").json
    assert one["batch"] is None and one["results"][0]["batch"] == ""


def test_results_isolated_between_uploaders(app, positive_dicom):
    alice, bob = app.test_client(), app.test_client()
    rid = result_id_from(upload(alice, ("a.dcm", positive_dicom.read_bytes())))
    assert alice.get(f"/results/{rid}").status_code == 200
    for url in (
        f"/results/{rid}",
        f"/results/{rid}/files/overlay.png",
        f"/results/{rid}/seg.dcm",
        f"/results/{rid}/identifiers",
        f"/api/v1/predictions/{rid}",
    ):
        assert bob.get(url).status_code == 404, url
    assert rid.encode() not in bob.get("/worklist").data
    assert bob.get("/api/v1/predictions").json["results"] == []
    assert post(bob, f"/results/{rid}/delete").status_code == 404
    assert post(bob, f"/results/{rid}/delete", confirm="yes").status_code == 404


def test_persistence_across_restart(tmp_path, tiny_predictor, positive_dicom):
    from app import create_app

    cfg = {
        "TESTING": True,
        "SECRET_KEY": "same",
        "DATA_DIR": str(tmp_path / "d"),
        "PREDICTOR": tiny_predictor,
    }
    client = create_app(cfg).test_client()
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    cookie = client.get_cookie("session")
    fresh = create_app(cfg).test_client()
    fresh.set_cookie("session", cookie.value)
    assert fresh.get(f"/results/{rid}").status_code == 200
    assert rid.encode() in fresh.get("/worklist").data


def test_worklist_sorting(client, positive_dicom):
    a = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    png = next(SIIM.glob("ktlProject0/data/train/images/*.png")).read_bytes()
    b = result_id_from(upload(client, ("b.png", png)))
    newest = client.get("/worklist").data.decode()
    assert newest.index(b) < newest.index(a)
    api = client.get("/api/v1/predictions?sort=probability").json["results"]
    probs = [r["probability"] for r in api]
    assert probs == sorted(probs, reverse=True)
    # the probability column header sorts, and toggles back to upload order
    assert 'id="sort-probability" href="/worklist?sort=probability"' in newest
    by_prob = client.get("/worklist?sort=probability").data.decode()
    assert (
        'id="sort-probability" href="/worklist?sort=newest"' in by_prob
        and "Probability ▼" in by_prob
    )


def test_worklist_is_readable(client, positive_dicom):
    """Long file names lose their middle (the end tells names apart), with the whole name on
    hover/focus; upload times are ISO like the study date, in UTC until the page's script
    says the reader's zone."""
    name = "a_very_long_file_name_from_the_modality_archive_2026_12_01_chest_pa.dcm"
    upload(client, (name, positive_dicom.read_bytes()))
    page = client.get("/worklist").data.decode()
    shown = "a_very_long…026_12_01_chest_pa.dcm"
    assert f'<span class="ellipsis" tabindex="0" title="{name}">{shown}</span>' in page
    assert re.search(
        r'<td class="when" data-epoch="[\d.]+">\d{4}-\d{2}-\d{2} \d{2}:\d{2}</td>', page
    )
    assert '<span class="small" id="tz">(UTC)</span>' in page


def test_api_prediction_json(client, positive_dicom):
    resp = upload(
        client,
        ("x.dcm", positive_dicom.read_bytes()),
        ("y.txt", b"nope" * 40),
        url="/api/v1/predictions",
    )
    assert resp.status_code == 201
    body = resp.json
    (res,), (err,) = body["results"], body["errors"]
    assert err["code"] == "unsupported_format" and err["file"] == "y.txt"
    # the verdict is the operating point's rule applied to the probability, and the mask follows it
    suspected = res["probability"] >= res["threshold"]
    assert res["positive"] == suspected
    assert res["verdict"] == ("pneumothorax suspected" if suspected else "not detected")
    assert (res["area_px"] > 0) <= suspected
    assert 0 <= res["probability"] <= 1 and res["threshold"] == pytest.approx(0.3)
    assert res["area_px"] == int(rle.decode(res["mask_rle"]).sum())
    assert res["area_cm2"] is None and "implausible" in res["metadata"]["spacing_warning"]
    assert res["side"]["label"] and res["file"] == "x.dcm"
    assert res["operating_point"]["name"] == "balanced" and res["probability_kind"] == "score"
    assert res["links"]["seg"].endswith("/seg.dcm")
    again = client.get(res["links"]["self"]).json
    assert again["mask_rle"] == res["mask_rle"]
    ds = pydicom.dcmread(positive_dicom)
    assert str(ds.PatientID) not in json.dumps(body)


def test_api_errors_are_json(client):
    resp = client.post("/api/v1/predictions", data={}, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.json["errors"][0]["code"] == "no_file"
    assert client.get("/api/v1/predictions/doesnotexist0000000").status_code == 404
    assert client.get("/api/v1/predictions/doesnotexist0000000").json["error"]["message"]


def test_served_openapi_document_matches_real_responses(client, positive_dicom):
    """Every response body is valid under the served document's schema, which lists
    every field (required, no others): the document cannot drift from the API."""
    import jsonschema

    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    created = paths["/api/v1/predictions"]["post"]["responses"]["201"]["content"][
        "application/json"
    ]["schema"]
    one = paths["/api/v1/predictions/{id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    strict = dict(one, additionalProperties=False)
    token = client.get("/api/v1/csrf-token").json["csrf_token"]  # starts a session
    resp = client.post(
        "/api/v1/predictions",
        data={
            "files": [
                (io.BytesIO(positive_dicom.read_bytes()), "chest.dcm"),
                (io.BytesIO(b"not an image"), "y.txt"),
            ]
        },
        content_type="multipart/form-data",
        headers={"X-CSRF-Token": token},
    )
    assert resp.status_code == 201
    jsonschema.validate(resp.json, created)
    result = resp.json["results"][0]
    posted = created["properties"]["results"]["items"]
    jsonschema.validate(result, dict(posted, additionalProperties=False))
    assert result.pop("uploaded_before") is False  # the one field a fresh upload adds
    jsonschema.validate(result, strict)
    assert result["file"] == "chest.dcm" and {"created", "source_format"} <= set(result)
    got = client.get(f"/api/v1/predictions/{result['id']}").json
    jsonschema.validate(got, strict)
    listed = client.get("/api/v1/predictions").json["results"]
    assert listed and all(jsonschema.validate(r, strict) is None for r in listed)
    assert listed[0]["file"] == "chest.dcm"  # the list no longer drops the file name


def test_delete_and_purge(app, client, positive_dicom):
    store = app.extensions["pneumo"].store
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    ask = post(client, f"/results/{rid}/delete")  # the first click only asks
    assert ask.status_code == 200 and b"Delete this result permanently?" in ask.data
    assert b'name="confirm" value="yes"' in ask.data
    assert client.get(f"/results/{rid}").status_code == 200
    assert post(client, f"/results/{rid}/delete", confirm="yes").status_code == 303
    assert client.get(f"/results/{rid}").status_code == 404
    assert not (store.files.results_dir / rid).exists()
    assert not store.results.has_file(rid, "pixels.npy")
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    assert store.purge(older_than_days=30) == 0
    import time

    assert store.purge(older_than_days=30, now=time.time() + 31 * 86400) == 1
    assert not (store.files.results_dir / rid).exists() and store.results.all_ids() == []


def test_unwritable_data_dir_gives_503(app, client, positive_dicom, monkeypatch):
    store = app.extensions["pneumo"].store

    def boom(result_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.results, "stage", boom)
    resp = upload(client, ("a.dcm", positive_dicom.read_bytes()))
    assert resp.status_code == 503 and b"could not store" in resp.data


def test_missing_model_stops_startup(tmp_path):
    from app import create_app
    from pneumo.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="not found"):
        create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "x",
                "DATA_DIR": str(tmp_path),
                "MODEL_DIR": str(tmp_path / "nope"),
            }
        )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    (broken / "weights.weights.h5").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "x",
                "DATA_DIR": str(tmp_path),
                "MODEL_DIR": str(broken),
            }
        )


def test_access_password(tmp_path, tiny_predictor, positive_dicom):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": tiny_predictor,
            "ACCESS_PASSWORD": "s3cret",
        }
    )
    c = app.test_client()
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    resp = c.get("/worklist")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert c.post("/api/v1/predictions").status_code == 401
    assert post(c, "/login", password="wrong").status_code == 401
    resp = post(c, "/login?next=//evil.example", password="s3cret")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    assert c.get("/worklist").status_code == 200
    assert upload(c, ("a.dcm", positive_dicom.read_bytes())).status_code == 303
    post(c, "/logout")
    assert c.get("/worklist").status_code == 302


def test_security_headers(client):
    resp = client.get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    for page in ("/", "/worklist", "/login"):
        assert b"<script>" not in client.get(page).data  # no inline scripts anywhere


def test_csrf_required_on_forms(client, positive_dicom):
    resp = client.post(
        "/upload",
        data={"files": [(io.BytesIO(positive_dicom.read_bytes()), "a.dcm")]},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 403 and b"CSRF" in resp.data
    resp = client.post(
        "/upload",
        data={"csrf_token": "forged", "files": [(io.BytesIO(b"x"), "a.dcm")]},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 403 and b"CSRF" in resp.data
    assert 'name="csrf_token"' in client.get("/").data.decode()


def test_accounts_tokens_and_isolation(tmp_path, tiny_predictor, positive_dicom):
    app, token = user_app(tmp_path, tiny_predictor)
    anon = app.test_client()
    assert anon.get("/").status_code == 302
    assert anon.post("/api/v1/predictions").status_code == 401
    alice = app.test_client()
    assert post(alice, "/login", username="alice", password="wrong password").status_code == 401
    assert post(alice, "/login", username="alice", password="correct horse 1").status_code == 303
    rid = result_id_from(upload(alice, ("a.dcm", positive_dicom.read_bytes())))
    # the API token of the same user sees the same results, without cookies or CSRF
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert [r["id"] for r in api.get("/api/v1/predictions", headers=auth).json["results"]] == [rid]
    resp = api.post(
        "/api/v1/predictions",
        headers=auth,
        content_type="multipart/form-data",
        data={"files": [(io.BytesIO(positive_dicom.read_bytes()), "b.dcm")]},
    )
    assert resp.status_code == 201
    assert (
        api.get("/api/v1/predictions", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    bob = app.test_client()
    post(bob, "/login", username="bob", password="correct horse 2")
    assert bob.get(f"/results/{rid}").status_code == 404
    assert bob.get(f"/api/v1/predictions/{rid}").status_code == 404
    assert bob.get("/api/v1/predictions").json["results"] == []


def test_login_rate_limited(tmp_path, tiny_predictor):
    app, _ = user_app(tmp_path, tiny_predictor, LOGIN_RATE_LIMIT="3 per minute")
    c = app.test_client()
    codes = [
        post(c, "/login", username="alice", password="nope nope nope").status_code for _ in range(5)
    ]
    assert codes[:3] == [401, 401, 401] and codes[3] == 429


def test_upload_rate_limited(tmp_path, tiny_predictor):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": tiny_predictor,
            "UPLOAD_RATE_LIMIT": "2 per minute",
        }
    )
    c = app.test_client(use_cookies=False)  # a script client (curl): no session, so no CSRF
    codes = [
        c.post("/api/v1/predictions", data={}, content_type="multipart/form-data").status_code
        for _ in range(3)
    ]
    assert codes == [400, 400, 429]
    assert c.post("/api/v1/predictions").json["error"]["message"]


def test_refuses_open_server_beyond_loopback(tmp_path, tiny_predictor):
    from app import create_app
    from app.services import ConfigError

    cfg = {
        "TESTING": True,
        "SECRET_KEY": "k",
        "DATA_DIR": str(tmp_path / "d"),
        "PREDICTOR": tiny_predictor,
        "HOST": "0.0.0.0",
    }
    with pytest.raises(ConfigError, match="no login is configured"):
        create_app(cfg)
    app = create_app(dict(cfg, ACCESS_PASSWORD="demo-password"))
    assert app.test_client().get("/").status_code == 302


def test_cli_create_user_and_token(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT

    d = str(tmp_path / "data")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "create-user",
            "carol",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        input="long enough pw\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0 and "created user carol" in res.stdout
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "create-user",
            "dave",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2 and "at least" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "app.cli", "create-token", "carol", "--data-dir", d],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0 and res.stdout.startswith("pn_")
    import sqlite3
    from app.store.database import DATABASE_NAME
    from app.store.repository import Store

    assert Store(d).accounts.user_for_token(res.stdout.strip()) is not None
    with sqlite3.connect(Path(d) / DATABASE_NAME) as db:  # what is on disk
        stored = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("scrypt:") and "long enough pw" not in stored


def test_upload_writes_little_and_views_render_on_demand(app, client, positive_dicom):
    """The upload stores pixels, probabilities and RLE; images are made when first asked for."""
    from pneumo.io.imaging import read_image

    store = app.extensions["pneumo"].store
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    folder = store.files.results_dir / rid
    assert sorted(p.name for p in folder.iterdir()) == [
        "mask_rle.txt",
        "pixels.npy",
        "prob.png",
        "source.dcm",
        "thumb.jpg",  # the worklist's, written with the result
    ]
    assert np.array_equal(np.load(folder / "pixels.npy"), read_image(positive_dicom).pixels)
    with Image.open(folder / "prob.png") as prob:
        prob.load()
    assert prob.size == (64, 64) and prob.mode == "L"  # the tiny model's resolution
    image = client.get(f"/results/{rid}/files/image.png")
    assert image.status_code == 200 and (folder / "image.png").exists()
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(image.data))), np.load(folder / "pixels.npy")
    )
    # a second request serves the cached file, byte for byte
    assert client.get(f"/results/{rid}/files/image.png").data == image.data
    assert not list(folder.glob(".*.tmp"))


def test_concurrent_first_requests_get_whole_files(app, client, positive_dicom):
    import threading
    from app import renditions

    store = app.extensions["pneumo"].store
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    row = next(r for r in _rows(store) if r.id == rid)
    outputs, errors = [], []

    def fetch():
        try:
            outputs.append(renditions.artefact(store.results, row, "overlay.png"))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(outputs) == 8 and len(set(outputs)) == 1
    overlay = np.asarray(Image.open(io.BytesIO(outputs[0])))
    mask = rle.decode(row.rle, overlay.shape[:2])
    mask[int(0.9 * mask.shape[0]) :] = False  # the bottom strip holds the "AI output" label
    assert mask.any() and (overlay[mask][:, 0] > overlay[mask][:, 2]).all()  # orange on grey
    assert not list((store.files.results_dir / rid).glob(".*.tmp"))


def _rows(store):
    return [store.results.get_any(i) for i in store.results.all_ids()]


def test_deleted_result_is_not_recreated_by_a_late_render(app, client, positive_dicom):
    from app import renditions

    store = app.extensions["pneumo"].store
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    row = next(r for r in _rows(store) if r.id == rid)
    assert post(client, f"/results/{rid}/delete", confirm="yes").status_code == 303
    assert renditions.artefact(store.results, row, "overlay.png") is None
    assert not (store.files.results_dir / rid).exists()


def test_results_stored_before_pixels_npy_still_render(app, client, positive_dicom):
    """Older results kept image.png and no pixels.npy; their views must keep working."""
    store = app.extensions["pneumo"].store
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    folder = store.files.results_dir / rid
    pixels = np.load(folder / "pixels.npy")
    Image.fromarray(pixels).save(folder / "image.png")
    (folder / "pixels.npy").unlink()
    overlay = client.get(f"/results/{rid}/files/overlay.png")
    assert overlay.status_code == 200
    assert np.asarray(Image.open(io.BytesIO(overlay.data))).shape == pixels.shape + (3,)
    seg = client.get(f"/results/{rid}/seg.dcm")
    assert seg.status_code == 200


def test_results_stored_by_an_earlier_version_stay_readable(tmp_path):
    """A database without the newer columns is migrated in place; its rows keep working."""
    import sqlite3
    from app.store.repository import Store

    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "pneumo.sqlite3") as db:
        db.executescript("""CREATE TABLE results (id TEXT PRIMARY KEY, owner TEXT NOT NULL,
            created REAL NOT NULL, source_format TEXT NOT NULL, positive INTEGER NOT NULL,
            probability REAL NOT NULL, threshold REAL NOT NULL, area_px INTEGER NOT NULL,
            area_cm2 REAL, side TEXT NOT NULL, meta TEXT NOT NULL, identifiers TEXT NOT NULL,
            model TEXT NOT NULL, rle TEXT NOT NULL, timings TEXT NOT NULL);""")
        db.execute(
            "INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                "x" * 22,
                "session:a",
                1.0,
                "PNG",
                1,
                0.93,
                0.9,
                10,
                None,
                "{}",
                '{"format": "PNG"}',
                "{}",
                "old (2026-11-27)",
                "1 2",
                "{}",
            ),
        )
    store = Store(data)
    store.init()
    row = store.results.get("x" * 22, "session:a")
    assert row.probability == 0.93 and row.positive and row.probability_kind == "score"
    assert row.file_name == "" and row.operating_point == {} and not row.finding_below_threshold
    assert row.public_dict()["verdict"] == "pneumothorax suspected"


def test_health_answers_while_the_model_loads(tmp_path, tiny_model_folder, monkeypatch):
    """/healthz answers at once; /readyz says 503 until the model is loaded and warm;
    an upload meanwhile waits for the model instead of failing."""
    import threading
    from app import create_app
    from pneumo.inference.predictor import Predictor

    release, real_load = threading.Event(), Predictor.load.__func__

    def slow_load(cls, *args, **kwargs):
        release.wait(30)
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(Predictor, "load", classmethod(slow_load))
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATA_DIR": str(tmp_path / "d"),
            "MODEL_DIR": str(tiny_model_folder),
        }
    )
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    loading = client.get("/readyz")
    assert loading.status_code == 503 and loading.json["status"] == "loading"
    release.set()
    assert app.extensions["pneumo"].model.get(wait_s=30) is not None
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["operating_point"] == "balanced"


def test_a_model_that_fails_to_load_is_reported(tmp_path, tiny_model_folder):
    import shutil
    from app import create_app
    from pneumo.errors import ModelLoadError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_folder, broken)
    (broken / "weights.weights.h5").write_bytes(b"not weights")
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATA_DIR": str(tmp_path / "d"),
            "MODEL_DIR": str(broken),
        }
    )
    holder = app.extensions["pneumo"].model
    with pytest.raises(Exception, match="could not be loaded"):
        holder.get(wait_s=60)
    body = app.test_client().get("/readyz")
    assert body.status_code == 503 and body.json["status"] == "failed"
    # a missing model folder is refused before the app serves, with the reason
    with pytest.raises(ModelLoadError, match="not found"):
        create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "k",
                "DATA_DIR": str(tmp_path / "d"),
                "MODEL_DIR": str(tmp_path / "nowhere"),
            }
        )


def test_api_posts_riding_on_a_session_cookie_need_the_csrf_token(
    tmp_path, tiny_predictor, positive_dicom
):
    """Only bearer-token calls (and calls without any session cookie) skip the CSRF check."""
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": tiny_predictor,
        }
    )
    data = positive_dicom.read_bytes()

    def post_api(client, headers=None):
        return client.post(
            "/api/v1/predictions",
            headers=headers or {},
            data={"files": [(io.BytesIO(data), "a.dcm")]},
            content_type="multipart/form-data",
        )

    browser = app.test_client()
    browser.get("/")  # a page visit: the browser now holds a session cookie
    refused = post_api(browser)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_token_missing"
    forged = post_api(browser, {"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    token = browser.get("/api/v1/csrf-token").json["csrf_token"]
    assert post_api(browser, {"X-CSRF-Token": token}).status_code == 201
    # a form with its token (the upload page) is allowed
    assert upload(browser, ("b.dcm", data)).status_code == 303
    # a script without any cookie: nothing to forge
    assert post_api(app.test_client()).status_code == 201
    # a bearer token: allowed whatever cookie comes with it
    app.extensions["pneumo"].store.accounts.create("erin", "long enough pw")
    api_token = app.extensions["pneumo"].store.accounts.create_token("erin")
    assert post_api(browser, {"Authorization": f"Bearer {api_token}"}).status_code == 201


def test_shown_probability_never_rounds_to_certainty():
    from app.views import shown_probability

    assert shown_probability(0.996) == "> 0.99"
    assert shown_probability(0.004) == "< 0.01"
    assert shown_probability(0.99) == "0.99"
    assert shown_probability(0.01) == "0.01"
    assert shown_probability(0.634) == "0.63"
    assert shown_probability(float("nan")) == "–"
    assert shown_probability(None) == "–"


def test_large_image_gets_a_display_rendition_and_keeps_the_original(app, client, positive_dicom):
    """The viewer loads a rendition at most 2048 px a side; downloads keep the full size."""
    import cv2
    from pneumo.io.imaging import read_image

    film = cv2.resize(
        read_image(positive_dicom).pixels, (3000, 4096), interpolation=cv2.INTER_LINEAR
    )
    buf = io.BytesIO()
    Image.fromarray(film).save(buf, "PNG")
    rid = result_id_from(upload(client, ("big.png", buf.getvalue())))
    page = client.get(f"/results/{rid}").get_data(as_text=True)
    assert f"/results/{rid}/files/view.png" in page and 'id="loading"' in page
    assert f'data-image="/results/{rid}/files/image.png"' not in page
    view = Image.open(io.BytesIO(client.get(f"/results/{rid}/files/view.png").data))
    vmask = Image.open(io.BytesIO(client.get(f"/results/{rid}/files/view_mask.png").data))
    full = Image.open(io.BytesIO(client.get(f"/results/{rid}/files/image.png").data))
    assert view.size == vmask.size == (1500, 2048) and full.size == (3000, 4096)


def test_api_reference_page_serves_its_assets_locally(client):
    """/docs leads to an interactive reference built from the package's Swagger UI files;
    the page loads nothing from another host and its script is not inline (CSP)."""
    assert client.get("/docs").headers["Location"].endswith("/api/docs")
    page = client.get("/api/docs")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-url="/api/v1/openapi.json"' in html
    assert "http://" not in html and "https://" not in html
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts[0] == "/api/docs/assets/swagger-ui-bundle.js"
    assert re.fullmatch(r"/static/api_docs\.js\?v=[0-9a-f]{12}", scripts[1])  # versioned
    kept = client.get(scripts[1])  # a versioned address may be kept; a bare one is asked again
    assert kept.status_code == 200 and "max-age=31536000" in kept.headers["Cache-Control"]
    assert "max-age=31536000" not in client.get("/static/api_docs.js").headers["Cache-Control"]
    js = client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and b"SwaggerUIBundle" in js.data[:200_000]
    assert client.get("/api/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/api/docs/assets/index.html").status_code == 404
    assert 'href="/api/docs"' in client.get("/").get_data(as_text=True)  # the footer link


def test_one_off_api_call_gets_no_cookie_and_no_dead_links(app, positive_dicom):
    """curl without a cookie jar or token: the full result, no Set-Cookie, links null
    (the OpenAPI document says so); a bearer call gets links that work."""
    fresh = app.test_client(use_cookies=False)
    resp = fresh.post(
        "/api/v1/predictions",
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(positive_dicom.read_bytes()), "a.dcm")},
    )
    assert resp.status_code == 201 and "Set-Cookie" not in resp.headers
    (res,) = resp.json["results"]
    assert res["links"] is None and res["mask_rle"] and res["verdict"]
    # answered, not stored: nobody could ever read it again (two files: no batch either)
    store = app.extensions["pneumo"].store
    assert store.results.get_any(res["id"]) is None and not store.results.all_ids()
    assert not any(store.results.has_file(res["id"], n) for n in ("source.dcm", "pixels.npy"))
    two = fresh.post(
        "/api/v1/predictions",
        content_type="multipart/form-data",
        data={"files": [(io.BytesIO(positive_dicom.read_bytes()), n) for n in ("a.dcm", "b.dcm")]},
    )
    assert len(two.json["results"]) == 2 and two.json["batch"] is None
    assert not store.results.all_ids()
    links = fresh.get("/api/v1/openapi.json").json
    schema = links["paths"]["/api/v1/predictions"]["post"]["responses"]["201"]["content"][
        "application/json"
    ]["schema"]["properties"]["results"]["items"]["properties"]["links"]
    assert (
        "null" in schema["type"] and "null when the call carried neither" in schema["description"]
    )
    # a client that wants a session starts one at /api/v1/csrf-token: its uploads get links
    jar = app.test_client()
    token = jar.get("/api/v1/csrf-token").json["csrf_token"]
    resp = jar.post(
        "/api/v1/predictions",
        content_type="multipart/form-data",
        headers={"X-CSRF-Token": token},
        data={"file": (io.BytesIO(positive_dicom.read_bytes()), "a.dcm")},
    )
    (res,) = resp.json["results"]
    assert jar.get(res["links"]["image"]).status_code == 200
    app.extensions["pneumo"].store.accounts.create("ann", "a-long-password-1")
    token = app.extensions["pneumo"].store.accounts.create_token("ann")
    auth = {"Authorization": f"Bearer {token}"}
    resp = fresh.post(
        "/api/v1/predictions",
        content_type="multipart/form-data",
        headers=auth,
        data={"file": (io.BytesIO(positive_dicom.read_bytes()), "a.dcm")},
    )
    (res,) = resp.json["results"]
    assert fresh.get(res["links"]["self"], headers=auth).status_code == 200


def test_the_upload_script_is_told_where_to_go_and_the_page_renders_once(
    app, client, positive_dicom
):
    """The upload page's script asks with X-Requested-With: it gets the result's address
    (200 JSON) and opens it once; a form post without the script still gets the 303."""
    data = positive_dicom.read_bytes()
    resp = client.post(
        "/upload",
        data={"files": [(io.BytesIO(data), "a.dcm")], "csrf_token": csrf(client)},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    location = resp.get_json()["location"]
    assert re.fullmatch(r"/results/[A-Za-z0-9_-]{16,}", location)
    store = app.extensions["pneumo"].store
    rid = location.rsplit("/", 1)[-1]
    assert not [e for e in store.audit.events() if e.result_id == rid and e.action == "view"]
    assert client.get(location).status_code == 200
    views = [e for e in store.audit.events() if e.result_id == rid and e.action == "view"]
    assert len(views) == 1
    assert upload(client, ("b.dcm", data)).status_code == 303  # no script: the redirect
    # the viewer's files were made in the background after the upload, before any asked
    services = app.extensions["pneumo"]
    services._renderer.submit(lambda: None).result(timeout=60)
    for name in ("view.png", "view_mask.png"):
        made = store.results.read_file(rid, name)
        assert made is not None and made[:8] == b"\x89PNG\r\n\x1a\n", name
        assert client.get(f"/results/{rid}/files/{name}").data == made


def test_film_under_the_working_resolution_is_read_with_a_note(tmp_path):
    """A film smaller than the card's working resolution is enlarged before reading; its
    page and its JSON say so, and a full-size film's do not."""
    from app import create_app
    from conftest import write_untrained_model
    from pneumo.inference.predictor import Predictor

    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    folder = write_untrained_model(
        tmp_path / "model", arch, {"size": 64, "channels": 1, "working_size": 128}
    )
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "DATA_DIR": str(tmp_path / "data"),
            "PREDICTOR": Predictor.load(folder),
        }
    )
    client = app.test_client()
    path = next(SIIM.glob("ktlProject0/data/train/images/*.png"))
    film = np.asarray(Image.open(path).convert("L"))
    assert min(film.shape) >= 128
    small = io.BytesIO()
    Image.fromarray(film).resize((96, 100), Image.Resampling.BOX).save(small, "PNG")

    full = upload(client, ("full.png", path.read_bytes()), url="/api/v1/predictions").json
    assert "size_note" not in full["results"][0]["operating_point"]
    page = client.get(full["results"][0]["links"]["page"]).data.decode()
    assert 'id="size-note"' not in page

    body = upload(client, ("small.png", small.getvalue()), url="/api/v1/predictions").json
    note = body["results"][0]["operating_point"]["size_note"]
    assert "96 x 100 px" in note and "128 x 128" in note and "enlarged" in note
    page = client.get(body["results"][0]["links"]["page"]).data.decode()
    assert 'id="size-note"' in page and "96 x 100 px" in page
