"""The worklist and the API find what a reader asks for (issue 35): filters by review
state, verdict, upload days, batch and uploader; a search by file name, accession number
and patient that never goes in a URL; and a file uploaded twice links to its first result
instead of being stored again."""

import io
import time

import pydicom
import pytest

from helpers.web import csrf, result_id_from, upload


def _dicom(path, name: str, accession: str, uid: str, comment: str = "") -> bytes:
    """The real DICOM at ``path`` with another patient, accession and SOP Instance UID."""
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.AccessionNumber = name, accession
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    if comment:
        ds.ImageComments = comment
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.fixture()
def team(tmp_path, tiny_predictor):
    """An app with team A (an admin, a radiologist, an uploader) and team B (one
    radiologist), and each one's bearer header."""
    from app import create_app
    from app.store.repository import Store

    store = Store(tmp_path / "d")
    store.init()
    auth = {}
    for name, team_name, role in (
        ("ada", "A", "admin"),
        ("rad", "A", "radiologist"),
        ("up", "A", "uploader"),
        ("other", "B", "radiologist"),
    ):
        store.accounts.create(name, "a-long-password-1", team_name, role)
        auth[name] = {"Authorization": f"Bearer {store.accounts.create_token(name)}"}
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": tiny_predictor,
            "DUPLICATES": "link",  # the product's default (the suite's is keep)
        }
    )
    return app, auth


def _send(client, auth, name: str, data: bytes):
    resp = client.post("/api/v1/predictions", headers=auth, data={"file": (io.BytesIO(data), name)})
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.status_code, resp.get_json()["results"][0]


def _ids(client, auth, query: str = "", status: int = 200) -> set[str]:
    resp = client.get("/api/v1/predictions" + query, headers=auth)
    assert resp.status_code == status, resp.get_json()
    return {r["id"] for r in resp.get_json()["results"]} if status == 200 else resp.get_json()


def test_filters_and_search_find_what_a_reader_asks_for(team, positive_dicom):
    from app.store.records import Review

    app, auth = team
    client = app.test_client()
    _, jane = _send(
        client, auth["up"], "scan-0001.dcm", _dicom(positive_dicom, "Doe^Jane", "ACC123", "1.2.3.1")
    )
    _, john = _send(
        client, auth["up"], "scan-0002.dcm", _dicom(positive_dicom, "Roe^John", "ACC777", "1.2.3.2")
    )
    _, mine = _send(
        client, auth["rad"], "mine.dcm", _dicom(positive_dicom, "Poe^Edgar", "ACC5_0", "1.2.3.3")
    )
    store = app.extensions["pneumo"].store
    store.reviews.add(Review(john["id"], "user:2", "rad", time.time(), False, "false_alarm", None))
    store.reviews.add(Review(mine["id"], "user:2", "rad", time.time(), True, None, None))
    everyone = {jane["id"], john["id"], mine["id"]}
    rad = auth["rad"]

    assert _ids(client, rad) == everyone
    assert _ids(client, rad, "?status=unreviewed") == {jane["id"]}
    assert _ids(client, rad, "?status=reviewed") == {john["id"], mine["id"]}
    assert _ids(client, rad, "?status=disagreed") == {john["id"]}
    assert _ids(client, rad, "?uploader=up") == {jane["id"], john["id"]}
    positive = {i for i, r in ((i, store.results.get_any(i)) for i in everyone) if r.positive}
    assert _ids(client, rad, "?verdict=positive") == positive
    assert _ids(client, rad, "?verdict=negative") == everyone - positive
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert _ids(client, rad, f"?from={today}&to={today}") == everyone
    assert _ids(client, rad, "?to=2020-01-01") == set()
    # paging keeps the filter: the next link carries it
    first = client.get("/api/v1/predictions?uploader=up&limit=1", headers=rad).get_json()
    assert first["total"] == 2 and "uploader=up" in first["next"]
    second = client.get(first["next"], headers=rad).get_json()
    assert {r["id"] for r in first["results"] + second["results"]} == {jane["id"], john["id"]}

    # bad filters are a 400 that says what is wrong
    for query, words in (
        ("?status=done", "status must be one of"),
        ("?verdict=maybe", "verdict must be one of"),
        ("?from=yesterday", "not a date"),
        ("?from=2026-02-02&to=2026-02-01", "before the 'from' day"),
        ("?uploader=other", "not a user name of your team"),  # another team's user
        ("?q=doe", "never goes in a URL"),
    ):
        body = _ids(client, rad, query, status=400)
        assert words in body["error"]["message"], (query, body)
    # an uploader reads only its own: no team to filter by
    assert (
        "not a user name"
        in _ids(client, auth["up"], "?uploader=rad", status=400)["error"]["message"]
    )
    assert _ids(client, auth["up"]) == {jane["id"], john["id"]}

    def search(who, **body):
        resp = client.post("/api/v1/predictions/search", headers=who, json=body)
        assert resp.status_code == 200, resp.get_json()
        return {r["id"] for r in resp.get_json()["results"]}

    assert search(rad, q="jane doe") == set()  # the words in the stored order only
    assert search(rad, q="DOE JANE") == {jane["id"]}  # DICOM's ^ is a space; case is ignored
    assert search(rad, q="acc777") == {john["id"]}
    assert search(rad, q="scan-000") == {jane["id"], john["id"]}
    assert search(rad, q="scan", status="disagreed") == {john["id"]}
    assert search(rad, q="5_0") == {mine["id"]}  # _ and % are plain letters
    assert search(rad, q="%") == set()
    assert search(auth["other"], q="doe") == set()  # another team's patients stay unseen
    assert search(auth["up"], q="poe") == set()  # an uploader searches only its own
    paged = client.post(
        "/api/v1/predictions/search", headers=rad, json={"q": "scan", "limit": 1}
    ).get_json()
    assert paged["total"] == 2 and paged["next_cursor"]
    bad = client.post("/api/v1/predictions/search", headers=rad, data="not json")
    assert bad.status_code == 400 and "JSON object" in bad.get_json()["error"]["message"]
    long = client.post("/api/v1/predictions/search", headers=rad, json={"q": "x" * 101})
    assert long.status_code == 400 and "longer than 100" in long.get_json()["error"]["message"]


def test_the_worklist_filters_and_searches_in_a_posted_form(team, positive_dicom):
    app, auth = team
    client = app.test_client()
    _send(
        client,
        auth["up"],
        "1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878027.dcm",
        _dicom(positive_dicom, "Doe^Jane", "ACC123", "1.2.3.1"),
    )
    _send(
        client,
        auth["up"],
        "1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.999999.dcm",
        _dicom(positive_dicom, "Roe^John", "ACC777", "1.2.3.2"),
    )
    login = client.post(
        "/login",
        data={"username": "rad", "password": "a-long-password-1", "csrf_token": csrf(client)},
    )
    assert login.status_code in (302, 303)
    page = client.get("/worklist").get_data(as_text=True)
    # a teammate sees the file names (their ends, which tell SIIM names apart) and who sent them
    assert "….1517875165.878027.dcm<" in page and "….1517875165.999999.dcm<" in page
    assert page.count('<td class="uploader"><span class="ellipsis" title="up">up</span></td>') == 2
    assert "2 shown of 2 studies" in page
    found = client.post("/worklist", data={"q": "doe jane", "csrf_token": csrf(client)}).get_data(
        as_text=True
    )
    assert "1 shown of 1 study that match" in found and "878027" in found
    assert "999999" not in found
    refused = client.post("/worklist", data={"q": "doe"})  # no CSRF token: refused
    assert refused.status_code in (400, 403)
    # the search text never reaches a link of the page (only the posted form holds it)
    assert "q=doe" not in found.replace('value="doe jane"', "")
    bad = client.get("/worklist?status=finished")
    assert bad.status_code == 400 and "status must be one of" in bad.get_data(as_text=True)
    assert "2 shown of 2" in bad.get_data(as_text=True)  # the whole list, said so
    unreviewed = client.get("/worklist?status=unreviewed").get_data(as_text=True)
    assert "2 shown of 2 studies that match" in unreviewed


def test_a_file_uploaded_twice_links_to_its_first_result(team, positive_dicom):
    app, auth = team
    client = app.test_client()
    store = app.extensions["pneumo"].store
    data = _dicom(positive_dicom, "Doe^Jane", "ACC123", "1.2.3.9")
    code, first = _send(client, auth["up"], "a.dcm", data)
    assert code == 201 and first["uploaded_before"] is False
    code, again = _send(client, auth["up"], "again.dcm", data)  # the same bytes
    assert code == 200 and again["uploaded_before"] is True and again["id"] == first["id"]
    # the same instance, re-exported with another tag: the same study
    code, same = _send(
        client, auth["up"], "b.dcm", _dicom(positive_dicom, "Doe^Jane", "ACC123", "1.2.3.9", "x")
    )
    assert code == 200 and same["id"] == first["id"]
    # a teammate who reads the team's results is linked too; another team keeps its own
    code, teammate = _send(client, auth["rad"], "c.dcm", data)
    assert code == 200 and teammate["id"] == first["id"]
    code, elsewhere = _send(client, auth["other"], "d.dcm", data)
    assert code == 201 and elsewhere["id"] != first["id"]
    assert len(store.results.all_ids()) == 2
    # a browser upload of it opens the first result and says why
    client.post(
        "/login",
        data={"username": "rad", "password": "a-long-password-1", "csrf_token": csrf(client)},
    )
    resp = upload(client, ("e.dcm", data))
    assert resp.status_code == 303 and result_id_from(resp) == first["id"]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "uploaded before" in page
    # in a batch, the repeated file is named with a link to its first result
    other = _dicom(positive_dicom, "Roe^John", "ACC9", "1.2.3.10")
    batch = upload(client, ("f.dcm", data), ("g.dcm", other))
    text = client.get(batch.headers["Location"]).get_data(as_text=True)
    assert "uploaded before" in text and f"/results/{first['id']}" in text
    assert len(store.results.all_ids()) == 3


def test_linking_repeated_uploads_is_the_default():
    from app.settings import Settings

    assert Settings.from_env({}).duplicates == "link"
    assert Settings.from_env({"PNEUMO_DUPLICATES": "keep"}).duplicates == "keep"


def test_results_stored_before_version_5_are_found_by_search(tmp_path):
    """The migration gives the rows already there their search text and instance key."""
    import json

    from app.store import migrations
    from app.store.repository import Store

    (tmp_path / "d").mkdir()
    store = Store(tmp_path / "d")
    with store.db._connect() as db:
        migrations.migrate(db, target=4)
        db.execute(
            "INSERT INTO results (id, owner, created, source_format, positive, probability, "
            "threshold, area_px, side, meta, identifiers, model, rle, timings, file_name) "
            "VALUES ('rabcdefghijklmnopq', 'user:1', 1, 'DICOM', 0, 0.1, 0.5, "
            "0, '{}', '{}', :ids, 'm', '-1', '{}', 'old.dcm')",
            {"ids": json.dumps({"patient_name": "Doe^Jane", "sop_instance_uid": "1.2.3"})},
        )
    store.init()
    from app.store.records import instance_key
    from app.store.results import Filter

    page = store.results.page(None, where=Filter(text="doe jane"))
    assert [r.file_name for r in page.rows] == ["old.dcm"]
    assert page.rows[0].instance_key == instance_key({"sop_instance_uid": "1.2.3"})
    assert store.results.first_copy("user:1", "", instance_key({"sop_instance_uid": "1.2.3"}))
