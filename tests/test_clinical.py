"""The clinical loop on real files: teams and roles, the radiologist's review with a
corrected mask, the running agreement, the audit trail, and the export of reviews as
training data (issue 24, parts 1-3)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from pneumo.io import rle
from helpers.web import csrf, post

PASSWORD = "correct horse battery"


@pytest.fixture()
def department(tmp_path, tiny_predictor):
    """An app with two teams: A (alice admin, bob radiologist, carol and erin uploaders)
    and B (dave radiologist); each user's API token."""
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k" * 32,
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": tiny_predictor,
            "WARM_UP": False,
        }
    )
    store = app.extensions["pneumo"].store
    people = {
        "alice": ("A", None),
        "bob": ("A", "radiologist"),
        "carol": ("A", "uploader"),
        "erin": ("A", "uploader"),
        "dave": ("B", "radiologist"),
    }
    tokens = {}
    for name, (team, role) in people.items():
        store.accounts.create(name, PASSWORD, team, role)
        tokens[name] = {"Authorization": f"Bearer {store.accounts.create_token(name)}"}
    return app, store, tokens


def _api_upload(client, headers, path) -> str:
    resp = client.post(
        "/api/v1/predictions",
        headers=headers,
        data={"file": (io.BytesIO(path.read_bytes()), path.name)},
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["results"][0]["id"]


def _login(app, name):
    client = app.test_client()
    resp = post(client, "/login", username=name, password=PASSWORD)
    assert resp.status_code == 303, resp.data[:300]
    return client


def test_a_team_shares_its_worklist_and_no_one_else_sees_it(department, positive_dicom):
    app, store, tokens = department
    client = app.test_client()
    rid = _api_upload(client, tokens["carol"], positive_dicom)
    assert store.accounts.get(store.accounts.id_of("alice")).role == "admin"  # the first user
    for reader in ("alice", "bob"):  # the team's radiologist and admin read it
        listed = client.get("/api/v1/predictions", headers=tokens[reader]).get_json()["results"]
        assert [r["id"] for r in listed] == [rid]
        got = client.get(f"/api/v1/predictions/{rid}", headers=tokens[reader])
        assert got.status_code == 200 and got.get_json()["file"] == ""  # not the uploader's
        page = _login(app, reader).get(f"/results/{rid}")
        assert page.status_code == 200 and b"Save review" in page.data
        assert positive_dicom.name.encode() not in page.data  # the uploader's file name
    for stranger in ("dave", "erin"):  # another team; another uploader of the same team
        assert client.get(f"/api/v1/predictions/{rid}", headers=tokens[stranger]).status_code == 404
        assert (
            client.get("/api/v1/predictions", headers=tokens[stranger]).get_json()["results"] == []
        )
        session = _login(app, stranger)
        assert session.get(f"/results/{rid}").status_code == 404
        assert session.get(f"/results/{rid}/files/overlay.png").status_code == 404
        assert session.get(f"/results/{rid}/identifiers").status_code == 404
    mine = client.get(f"/api/v1/predictions/{rid}", headers=tokens["carol"]).get_json()
    assert mine["file"] == positive_dicom.name
    own = _login(app, "carol").get(f"/results/{rid}")
    assert own.status_code == 200 and b"Save review" not in own.data  # an uploader does not review
    # a radiologist may not delete a colleague's result; the admin may
    assert post(_login(app, "bob"), f"/results/{rid}/delete", confirm="yes").status_code == 404
    assert post(_login(app, "alice"), f"/results/{rid}/delete", confirm="yes").status_code == 303
    assert store.results.get_any(rid) is None


def _uploaded_for_review(department, path):
    """carol's upload of ``path``: the client, its result id, the image's shape and the
    viewer's."""
    from app import renditions

    app, store, tokens = department
    client = app.test_client()
    rid = _api_upload(client, tokens["carol"], path)
    row = store.results.get_any(rid)
    shape = (row.meta["rows"], row.meta["columns"])
    return client, rid, shape, renditions.view_shape(shape)


def _mask_png(shape: tuple[int, int], box: tuple[slice, slice]) -> str:
    rgba = np.zeros(shape + (4,), np.uint8)
    rgba[box] = 255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_review_with_a_corrected_mask_is_kept_shown_and_exported(
    department, positive_dicom, tmp_path
):
    app, store, tokens = department
    client, rid, shape, view = _uploaded_for_review(department, positive_dicom)
    box = (slice(view[0] // 4, view[0] // 2), slice(view[1] // 8, view[1] // 3))
    bob = _login(app, "bob")
    resp = post(
        bob,
        f"/results/{rid}/review",
        verdict="disagree",
        reason="wrong_extent",
        mask_png=_mask_png(view, box),
    )
    assert resp.status_code == 303
    review = store.reviews.for_result(rid)[0]
    assert (review.reviewer_name, review.agrees, review.reason) == ("bob", False, "wrong_extent")
    corrected = rle.decode(review.corrected_rle, shape)
    expected = np.zeros(view, bool)
    expected[box] = True
    expected = np.asarray(Image.fromarray(expected).resize((shape[1], shape[0]), Image.NEAREST))
    assert np.array_equal(corrected, expected)  # at the image's size, where it was drawn
    assert b"disagreed" in bob.get("/worklist").data
    page = bob.get(f"/results/{rid}").data.decode()
    assert "bob" in page and "wrong extent" in page and "corrected mask" in page
    api = client.get(f"/api/v1/predictions/{rid}/reviews", headers=tokens["alice"]).get_json()
    assert api["reviews"][0] == {
        **api["reviews"][0],
        "reviewer": "bob",
        "agrees": False,
        "reason": "wrong_extent",
        "corrected_mask": True,
    }
    # the correction itself: RLE in the API, a PNG at the image's size and at the view's
    assert np.array_equal(rle.decode(api["reviews"][0]["corrected_mask_rle"], shape), corrected)
    png = client.get(api["reviews"][0]["corrected_mask_png"], headers=tokens["alice"])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.data))) > 0, corrected)
    shown = bob.get(f"/results/{rid}/files/corrected_view_mask.png")
    assert np.asarray(Image.open(io.BytesIO(shown.data))).shape == view
    assert "reviewer's correction" in page and "corrected_view_mask.png" in page
    assert (
        client.get(f"/results/{rid}/files/corrected_mask.png", headers=tokens["dave"]).status_code
        == 404
    )  # another team
    # bad reviews are refused with a message, nothing kept
    bad = client.post(
        f"/api/v1/predictions/{rid}/review",
        headers=tokens["alice"],
        json={"agrees": False, "reason": "because"},
    )
    assert bad.status_code == 400 and "missed" in bad.get_json()["error"]["message"]
    wrong_size = client.post(
        f"/api/v1/predictions/{rid}/review",
        headers=tokens["alice"],
        json={"agrees": True, "mask_png": _mask_png((10, 10), box)},
    )
    assert wrong_size.status_code == 400
    assert (
        client.post(
            f"/api/v1/predictions/{rid}/review", headers=tokens["carol"], json={"agrees": True}
        ).status_code
        == 403
    )  # an uploader
    assert (
        client.post(
            f"/api/v1/predictions/{rid}/review", headers=tokens["dave"], json={"agrees": True}
        ).status_code
        == 404
    )  # another team
    assert len(store.reviews.for_result(rid)) == 1

    out = tmp_path / "export"
    env = dict(os.environ, PNEUMO_DATA_DIR=str(app.extensions["pneumo"].settings.data_dir))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "export-reviews", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["with_mask"] == 1
    table = rle.read_rle_csv(out / "reviews-rle.csv")
    assert np.array_equal(rle.merge(table[rid], shape), corrected)
    assert np.array_equal(np.asarray(Image.open(out / "masks" / f"{rid}.png")) > 0, corrected)
    assert np.asarray(Image.open(out / "images" / f"{rid}.png")).shape == shape
    with open(out / "labels.csv") as f:
        labels = list(csv.DictReader(f))
    assert labels[0]["image_id"] == rid and labels[0]["reason"] == "wrong_extent"
    assert labels[0]["label"] == str(int(store.results.get_any(rid).positive))
    # the export is a data source pneumo train takes (an extra source of a data config)
    from pneumo.data.datacfg import DataConfig

    config = tmp_path / "data.json"
    config.write_text(
        json.dumps(
            {
                "image_dirs": [],
                "rle_csv": str(out / "reviews-rle.csv"),
                "extra_sources": [
                    {"images": str(out / "images"), "rle_csv": str(out / "reviews-rle.csv")}
                ],
            }
        )
    )
    _, samples = DataConfig.load(config).samples()
    assert [(s.image_id, s.positive) for s in samples] == [(rid, bool(corrected.any()))]
    # the next unreviewed study is one request away; none left: the worklist says so
    other = _api_upload(client, tokens["carol"], positive_dicom)
    nxt = bob.get(f"/next-unreviewed?after={rid}")
    assert nxt.status_code == 303 and nxt.headers["Location"].endswith(f"/results/{other}")
    assert bob.get(f"/results/{other}/files/corrected_mask.png").status_code == 404
    bob.post(
        f"/api/v1/predictions/{other}/review",
        json={"agrees": True},
        headers={"X-CSRF-Token": csrf(bob)},
    )
    done_all = bob.get(f"/next-unreviewed?after={other}")
    assert done_all.headers["Location"].endswith("/worklist?status=unreviewed")
    assert "No unreviewed studies left." in bob.get(done_all.headers["Location"]).get_data(
        as_text=True
    )


def test_agreement_counts_the_reviews_per_operating_point():
    from app.clinical import agreement
    from app.store.records import ResultRow, Review

    def row(i, p):
        return ResultRow(
            id=f"r{i:020d}",
            owner="user:1",
            created=0.0,
            source_format="PNG",
            positive=p >= 0.5,
            probability=p,
            threshold=0.5,
            area_px=0,
            area_cm2=None,
            side={},
            meta={},
            identifiers={},
            model="m",
            rle="-1",
            timings={},
            operating_point={"name": "balanced", "review_band": [0.2, 0.5]},
        )

    def review(i, agrees, reason=None):
        return Review(f"r{i:020d}", "user:2", "bob", 0.0, agrees, reason)

    pairs = [
        (row(1, 0.9), review(1, True)),  # TP
        (row(2, 0.8), review(2, False, "false_alarm")),  # FP
        (row(3, 0.3), review(3, False, "missed")),  # FN at balanced, TP at triage
        (row(4, 0.1), review(4, True)),  # TN
        (row(5, 0.7), review(5, False, "other")),
    ]  # no verdict
    a = agreement(pairs)
    assert (a["reviewed"], a["agreed"], a["disagreed"], a["undetermined"]) == (5, 2, 3, 1)
    assert a["reasons"] == {"missed": 1, "false_alarm": 1, "wrong_extent": 0, "other": 1}
    balanced, triage = a["operating_points"]["balanced"], a["operating_points"]["triage"]
    assert (balanced["tp"], balanced["fn"], balanced["tn"], balanced["fp"]) == (1, 1, 1, 1)
    assert balanced["sensitivity"]["value"] == 0.5 and balanced["specificity"]["value"] == 0.5
    assert (triage["tp"], triage["fn"]) == (2, 0) and triage["sensitivity"]["value"] == 1.0
    low, high = balanced["sensitivity"]["ci95"]
    assert 0 < low < 0.5 < high < 1


def test_the_agreement_page_and_api(department, positive_dicom):
    app, store, tokens = department
    client = app.test_client()
    rid = _api_upload(client, tokens["carol"], positive_dicom)
    assert (
        client.post(
            f"/api/v1/predictions/{rid}/review",
            headers=tokens["bob"],
            json={"agrees": False, "reason": "missed"},
        ).status_code
        == 201
    )
    a = client.get("/api/v1/agreement", headers=tokens["alice"]).get_json()
    assert a["reviewed"] == 1 and a["reasons"]["missed"] == 1
    assert client.get("/api/v1/agreement", headers=tokens["dave"]).get_json()["reviewed"] == 0
    assert client.get("/api/v1/agreement", headers=tokens["carol"]).status_code == 403
    page = _login(app, "bob").get("/agreement")
    assert page.status_code == 200 and b"1 reviewed result" in page.data


def test_every_access_is_an_audit_event_only_admins_read(department, positive_dicom):
    app, store, tokens = department
    rid = _api_upload(app.test_client(), tokens["carol"], positive_dicom)
    bob = _login(app, "bob")
    assert bob.get(f"/results/{rid}").status_code == 200
    assert bob.get(f"/results/{rid}/identifiers").status_code == 200
    assert bob.get(f"/results/{rid}/files/overlay.png").status_code == 200
    assert bob.get(f"/results/{rid}/seg.dcm").status_code == 200
    assert post(bob, f"/results/{rid}/review", verdict="agree").status_code == 303
    alice = _login(app, "alice")
    assert post(alice, f"/results/{rid}/delete").status_code == 200  # asks first: no event
    assert post(alice, f"/results/{rid}/delete", confirm="yes").status_code == 303
    bob_id, alice_id = store.accounts.id_of("bob"), store.accounts.id_of("alice")
    events = [(e.actor, e.action, e.result_id) for e in store.audit.events()]
    for expected in [
        (f"user:{bob_id}", "view", rid),
        (f"user:{bob_id}", "view_identifiers", rid),
        (f"user:{bob_id}", "download", rid),
        (f"user:{bob_id}", "review", rid),
        (f"user:{alice_id}", "delete", rid),
    ]:
        assert expected in events, events
    assert sum(1 for e in events if e[1] == "delete") == 1
    assert sum(1 for e in events if e[1] == "download") == 2  # overlay and SEG
    # non-admins cannot read the trail; the admin gets it as CSV without identifiers
    assert bob.get("/admin/audit").status_code == 403
    assert _login(app, "dave").get("/admin/").status_code == 403
    assert (
        app.test_client().get("/admin/audit?format=json", headers=tokens["bob"]).status_code == 403
    )
    csv_text = alice.get("/admin/audit?format=csv").data.decode()
    assert rid in csv_text and "view_identifiers" in csv_text
    from pydicom import dcmread

    ds = dcmread(positive_dicom, stop_before_pixels=True)
    for value in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))):
        if len(value) > 3:
            assert value not in csv_text
    assert "events" in alice.get("/admin/audit?format=json").get_json()


def test_the_audit_trail_answers_an_auditor(department, positive_dicom):
    """Uploads are events; a refused attempt on another team's result is an event that
    team's admin sees (who, which id, why); a download says which object left (the
    identified or the de-identified SEG); the page names users and links full ids."""
    app, store, tokens = department
    rid = _api_upload(app.test_client(), tokens["carol"], positive_dicom)
    carol, dave = store.accounts.id_of("carol"), store.accounts.id_of("dave")
    team_a = store.accounts.get(carol).team_id
    assert _login(app, "dave").get(f"/results/{rid}").status_code == 404  # another team
    bob = _login(app, "bob")
    assert bob.get(f"/results/{rid}/seg.dcm").status_code == 200
    assert bob.get(f"/results/{rid}/seg.dcm?deidentify=1").status_code == 200
    assert bob.get("/results/" + "x" * 22).status_code == 404  # no such result
    events = store.audit.events()
    (upload,) = [e for e in events if e.action == "upload"]
    assert (upload.actor, upload.result_id, upload.team_id) == (f"user:{carol}", rid, team_a)
    refused = [e for e in events if e.action == "refused"]
    assert [(e.actor, e.result_id, e.team_id, e.detail) for e in refused] == [
        (f"user:{dave}", rid, team_a, "another owner's or team's result"),
        (f"user:{store.accounts.id_of('bob')}", "x" * 22, None, "no such result"),
    ]
    details = [e.detail for e in events if e.action == "download"]
    assert details == ["SEG, identified", "SEG, de-identified"]
    page = _login(app, "alice").get("/admin/audit").data.decode()
    assert f'dave <span class="small">(user:{dave})</span>' in page
    assert f'<a href="/results/{rid}"><code>{rid}</code></a>' in page
    only = _login(app, "alice").get("/admin/audit?action=refused&format=json").get_json()
    assert {e["action"] for e in only["events"]} == {"refused"} and len(only["events"]) == 1


def test_a_deployment_admin_reads_every_teams_audit_trail(tmp_path, tiny_predictor, positive_dicom):
    """PNEUMO_AUDIT_ADMINS: the named admin reads every team's events, with a team column
    and links only to the results it may open; any other admin, its own team's."""
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k" * 32,
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": tiny_predictor,
            "AUDIT_ADMINS": " dpo , nobody ",
        }
    )
    store = app.extensions["pneumo"].store
    for name, team, role in (
        ("dpo", "IT", "admin"),
        ("alice", "A", "admin"),
        ("dave", "B", "radiologist"),
    ):
        store.accounts.create(name, PASSWORD, team, role)
    dave = store.accounts.create_token("dave")
    rid = _api_upload(app.test_client(), {"Authorization": f"Bearer {dave}"}, positive_dicom)
    assert _login(app, "alice").get(f"/results/{rid}").status_code == 404  # refused: B's
    everyone = _login(app, "dpo").get("/admin/audit").data.decode()
    assert "every team of this deployment" in everyone
    assert '<td class="team">B</td>' in everyone and "upload" in everyone and "refused" in everyone
    assert f"<code>{rid}</code>" in everyone and f'href="/results/{rid}"' not in everyone
    events = _login(app, "dpo").get("/admin/audit?format=json").get_json()["events"]
    assert {e["action"] for e in events} >= {"upload", "refused"}
    own = _login(app, "alice").get("/admin/audit").data.decode()
    assert "every team" not in own and rid not in own  # B's events are not A's admin's
    # the retention purge of the trail is itself an event the deployment's auditor reads
    import time

    n = store.audit.purge(1, now=time.time() + 3 * 86400)
    assert n >= 2  # the upload and the refused attempt at least
    events = _login(app, "dpo").get("/admin/audit?format=json").get_json()["events"]
    purges = [e for e in events if e["action"] == "purge-audit"]
    assert len(purges) == 1 and purges[0]["actor"] == "retention"
    assert f"{n} event(s) before" in purges[0]["detail"]


def test_the_admin_revokes_tokens_and_sets_roles(department):
    app, store, tokens = department
    client = app.test_client()
    carol_id = store.accounts.id_of("carol")
    assert client.get("/api/v1/predictions", headers=tokens["carol"]).status_code == 200
    alice = _login(app, "alice")
    page = alice.get("/admin/").data.decode()
    assert "carol" in page and "dave" not in page  # the admin's own team only
    assert "after <strong>30 days</strong>" in page and "2192 days" in page  # retention
    token_id = store.accounts.tokens(carol_id)[0]["id"]
    assert post(_login(app, "bob"), "/admin/tokens/revoke", token=token_id).status_code == 403
    assert post(alice, "/admin/tokens/revoke", token=token_id).status_code == 303
    assert client.get("/api/v1/predictions", headers=tokens["carol"]).status_code == 401
    assert post(alice, f"/admin/users/{carol_id}/role", role="radiologist").status_code == 303
    assert store.accounts.get(carol_id).role == "radiologist"
    assert (
        post(alice, f"/admin/users/{store.accounts.id_of('dave')}/role", role="admin").status_code
        == 404
    )  # another team's user
    assert (
        post(
            alice, f"/admin/users/{store.accounts.id_of('alice')}/role", role="uploader"
        ).status_code
        == 400
    )  # not your own admin role


def test_create_user_takes_a_team_and_a_role_and_the_trail_exports(tmp_path):
    env = dict(os.environ, PNEUMO_DATA_DIR=str(tmp_path / "d"))

    def pneumo(*args, stdin=None):
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = pneumo("create-user", "ann", "--password-stdin", stdin=PASSWORD)
    assert first.returncode == 0 and "admin of team default" in first.stdout
    second = pneumo(
        "create-user",
        "ben",
        "--team",
        "ward 4",
        "--role",
        "uploader",
        "--password-stdin",
        stdin=PASSWORD,
    )
    assert second.returncode == 0 and "uploader of team ward 4" in second.stdout
    bad = pneumo("create-user", "cy", "--role", "boss", "--password-stdin", stdin=PASSWORD)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    trail = pneumo("audit", "--since", "2020-01-01", "--format", "json")
    assert trail.returncode == 0 and json.loads(trail.stdout) == []
    assert pneumo("audit", "--since", "yesterday").returncode == 2


def test_the_structured_report_and_secondary_capture_download(department, positive_dicom):
    import highdicom as hd
    import pydicom

    app, store, tokens = department
    client = app.test_client()
    rid = _api_upload(client, tokens["carol"], positive_dicom)
    row = store.results.get_any(rid)
    seg = pydicom.dcmread(
        io.BytesIO(client.get(f"/results/{rid}/seg.dcm", headers=tokens["bob"]).data)
    )
    sr_resp = client.get(f"/results/{rid}/sr.dcm", headers=tokens["bob"])
    sc_resp = client.get(f"/results/{rid}/sc.dcm", headers=tokens["bob"])
    assert sr_resp.status_code == sc_resp.status_code == 200
    sr = hd.sr.srread(io.BytesIO(sr_resp.data))
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    assert (
        sr.SOPInstanceUID
        == pydicom.dcmread(
            io.BytesIO(client.get(f"/results/{rid}/sr.dcm", headers=tokens["alice"]).data)
        ).SOPInstanceUID
    )  # stable
    text = str(sr)
    assert "Pneumothorax" in text and ("Present" if row.positive else "Absent") in text
    sc = pydicom.dcmread(io.BytesIO(sc_resp.data))
    assert sc.BurnedInAnnotation == "YES" and sc.pixel_array.shape[-1] == 3
    assert sc.StudyInstanceUID == seg.StudyInstanceUID
    assert client.get(f"/results/{rid}/sr.dcm", headers=tokens["dave"]).status_code == 404
    downloads = [e.detail for e in store.audit.events() if e.action == "download"]
    assert len(downloads) == 4  # SEG, SR twice, SC: each recorded


def _png_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bomb_url(side: int) -> str:
    """A small PNG file that declares ``side`` x ``side`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\0" + b"\0" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_the_review_endpoint_refuses_every_tampered_body_without_a_server_error(
    department, positive_dicom
):
    """Hardening III item 5: mask bombs are refused from the PNG header before a pixel is
    decoded; reasons, masks and bodies of the wrong type or shape are a 400, never a 500;
    nothing is kept for any of them; and a black grey PNG means nothing painted."""
    app, store, tokens = department
    client, rid, shape, view = _uploaded_for_review(department, positive_dicom)
    url = f"/api/v1/predictions/{rid}/review"
    headers = dict(tokens["bob"], **{"Content-Type": "application/json"})
    jpeg = io.BytesIO()
    Image.new("L", (view[1], view[0])).save(jpeg, format="JPEG")
    good_png = _png_url(Image.new("RGBA", (view[1], view[0])))
    bodies = [
        {"agrees": True, "mask_png": _bomb_url(13000)},
        {"agrees": True, "mask_png": _bomb_url(14000)},
        {"agrees": False, "reason": ["missed"]},
        {"agrees": False, "reason": {"missed": 1}},
        {"agrees": False, "reason": 7},
        {"agrees": False, "reason": None},
        {"agrees": True, "mask_png": 12},
        {"agrees": True, "mask_png": ["data:image/png;base64,"]},
        {"agrees": True, "mask_png": {"png": good_png}},
        {"agrees": True, "mask_png": True},
        {"agrees": True, "mask_png": "data:image/png;base64,!!!"},
        {"agrees": True, "mask_png": "data:image/png;base64,"},
        {"agrees": True, "mask_png": good_png[:200]},
        {
            "agrees": True,
            "mask_png": "data:image/png;base64," + base64.b64encode(jpeg.getvalue()).decode(),
        },
        {"agrees": True, "mask_png": "data:image/png;base64," + "A" * (9 * 1024 * 1024)},
        {"agrees": True, "mask_png": _png_url(Image.new("L", (view[1] + 1, view[0])))},
        {"agrees": "yes"},
        {"agrees": None},
        {},
        [],
        "agree",
        3,
    ]
    codes = [client.post(url, headers=headers, data=json.dumps(b)).status_code for b in bodies]
    raw = ["[" * 100_000, "{" * 50_000, "not json", "", '{"agrees": tru', "\xff\xfe"]
    codes += [client.post(url, headers=headers, data=b).status_code for b in raw]
    form = [
        {"verdict": "maybe"},
        {"verdict": "disagree", "reason": "x" * 5000},
        {"verdict": "agree", "mask_png": _bomb_url(13000)},
    ]
    bob = _login(app, "bob")
    codes += [post(bob, f"/results/{rid}/review", **f).status_code for f in form]
    assert len(codes) == 31 and set(codes) == {400}, [
        (i, c) for i, c in enumerate(codes) if c != 400
    ]
    assert store.reviews.for_result(rid) == []
    # a grey PNG without alpha: black is "nothing painted", white is painted
    grey = np.zeros(view, np.uint8)
    grey[: view[0] // 2] = 255
    resp = client.post(
        url,
        headers=tokens["bob"],
        json={"agrees": True, "mask_png": _png_url(Image.fromarray(grey, "L"))},
    )
    assert resp.status_code == 201
    corrected = rle.decode(store.reviews.for_result(rid)[0].corrected_rle, shape)
    assert 0.45 < corrected.mean() < 0.55
    resp = client.post(
        url,
        headers=tokens["bob"],
        json={"agrees": True, "mask_png": _png_url(Image.new("L", (view[1], view[0])))},
    )
    assert resp.status_code == 201
    assert not rle.decode(store.reviews.for_result(rid)[-1].corrected_rle, shape).any()


def test_pixels_never_leave_unrecorded(department, positive_dicom):
    """Hardening III item 7: the viewer's own files are covered by a page view of the same
    result by the same caller; fetched without one they are downloads like any other file;
    the team list and the reviews API are events too."""
    app, store, tokens = department
    client = app.test_client()
    rid = _api_upload(client, tokens["carol"], positive_dicom)
    bob_id, dave = store.accounts.id_of("bob"), tokens["dave"]

    def bob_events(action=None):
        return [
            (e.action, e.detail)
            for e in store.audit.events()
            if e.actor == f"user:{bob_id}" and (action is None or e.action == action)
        ]

    # straight to the viewer's rendition, no page view: recorded
    assert client.get(f"/results/{rid}/files/view.png", headers=tokens["bob"]).status_code == 200
    assert bob_events("download") == [("download", "view.png")]
    # the page, then its own files: one view, no further downloads
    bob = _login(app, "bob")
    assert bob.get(f"/results/{rid}").status_code == 200
    for name in ("view.png", "view_mask.png", "thumb.jpg"):
        assert bob.get(f"/results/{rid}/files/{name}").status_code == 200
    assert len(bob_events("view")) == 1 and len(bob_events("download")) == 1
    # the list and the reviews API
    assert client.get("/api/v1/predictions", headers=tokens["bob"]).status_code == 200
    assert (
        client.get(f"/api/v1/predictions/{rid}/reviews", headers=tokens["bob"]).status_code == 200
    )
    assert {"list", "view_reviews"} <= {a for a, _ in bob_events()}
    # another team's caller gets 404 and nothing of the result
    assert client.get(f"/results/{rid}/files/view.png", headers=dave).status_code == 404


def test_pages_tell_the_truth_about_who_sees_what(department):
    """Issue 35 item 6: a team member's upload page says the team sees the results; the API's
    reference page sends a logged-out browser to the login page, as /docs does."""
    app, _, _ = department
    page = _login(app, "carol").get("/").data.decode()
    assert "your team's radiologists and admins" in page and "only to you" not in page
    anon = app.test_client()
    for path in ("/api/docs", "/docs"):
        resp = anon.get(path)
        assert resp.status_code in (302, 303), (path, resp.status_code)
    assert "/login" in anon.get("/api/docs").headers["Location"]
    assert anon.get("/api/v1/predictions").status_code == 401  # the API itself: JSON 401
