"""The store on both of its databases (the embedded SQLite file and a real PostgreSQL
server started by the tests) and on a blob store: the same queries, the send queue
claimed once across workers, versioned migrations that keep every row, an outage
answered with 503 and recovered from without a restart."""

from __future__ import annotations

import datetime
import io
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from app.store import migrations
from app.store.records import FIELDS, ReadRow, ResultRow
from app.store.repository import Store

RELEASE_1 = Path(__file__).parent / "data" / "release1"
TABLES = ("results", "batches", "users", "tokens", "sessions", "rate_counters", "pacs_sends")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()
    s = Store(tmp_path / "data", url)
    s.init()
    yield s
    s.close()


def _row(owner: str = "user:1", created: float | None = None, **changes) -> ResultRow:
    values = dict(
        id=uuid.uuid4().hex,
        owner=owner,
        created=created or time.time(),
        source_format="DICOM",
        positive=True,
        probability=0.8123456789,
        threshold=0.5,
        area_px=42,
        area_cm2=3.25,
        side={"side": "left"},
        meta={"modality": "CR"},
        identifiers={"PatientID": "x"},
        model="m (v3)",
        rle="5 3",
        timings={"total_ms": 9.5},
        file_name="a.dcm",
        probability_kind="probability",
        operating_point={"name": "balanced"},
    )
    values.update(changes)
    return ResultRow(**values)


def _commit(store: Store, row: ResultRow, payload: bytes = b"pixels") -> None:
    staged = store.results.stage(row.id)
    staged.put("source.dcm", payload)
    store.results.commit(row, staged)


def test_results_accounts_sessions_and_counters_behave_alike(store):
    row = _row(created=1_764_000_000.123456)
    _commit(store, row)
    got = store.results.get(row.id, row.owner)
    assert got == row  # every field, the full float precision of times and probabilities
    assert store.results.get(row.id, "user:2") is None
    assert store.results.read_file(row.id, "source.dcm") == b"pixels"
    other = _row(probability=0.95)
    _commit(store, other)
    assert [r.id for r in store.results.list("user:1", sort="probability")] == [other.id, row.id]
    assert [r.id for r in store.results.between(1_764_000_000, 1_764_000_001)] == [row.id]

    uid = store.accounts.create("alice", "correct horse battery")
    with pytest.raises(ValueError, match="already exists"):
        store.accounts.create("alice", "another long password")
    assert store.accounts.authenticate("alice", "correct horse battery") == uid
    assert store.accounts.authenticate("alice", "wrong password here") is None
    assert store.accounts.user_for_token(store.accounts.create_token("alice")) == uid
    session = store.sessions.open(f"user:{uid}")
    assert store.sessions.active(session, f"user:{uid}", 60)
    store.sessions.close(session)
    assert not store.sessions.active(session, f"user:{uid}", 60)

    assert [store.counters.hit("k", 60) for _ in range(3)] == [1, 2, 3]
    assert store.counters.hit("short", 0.05) == 1
    time.sleep(0.1)
    assert store.counters.hit("short", 0.05) == 1  # a new window

    store.reads.add(ReadRow(row.id, "other (v4)", time.time(), 0.4, False, 0.5, 0, "-1"))
    store.reads.add(ReadRow(row.id, "other (v4)", time.time(), 0.6, True, 0.5, 7, "1 7"))
    assert [(r.model, r.probability, r.positive) for r in store.reads.for_result(row.id)] == [
        ("other (v4)", 0.6, True)
    ]  # the same model's later read replaces the earlier
    assert store.delete(row.id, row.owner)
    assert store.results.get(row.id, row.owner) is None and store.reads.for_result(row.id) == []
    assert store.results.read_file(row.id, "source.dcm") is None


def test_send_queue_hands_each_send_to_one_worker(store):
    rows = [_row() for _ in range(30)]
    for row in rows:
        _commit(store, row)
        store.sends.queue(row.id, row.owner)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker():
        while True:
            got = store.sends.claim_due(3, stale_after_s=600)
            if not got:
                return
            with lock:
                claimed.extend(result_id for result_id, _ in got)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(r.id for r in rows)  # each once, none lost
    assert all(store.sends.state(r.id).state == "sending" for r in rows)


def test_a_failed_send_backs_off_and_the_wait_is_kept_in_the_queue(store):
    row = _row()
    _commit(store, row)
    store.sends.queue(row.id, row.owner)
    assert store.sends.claim_due(5, 600) == [(row.id, row.owner)]
    before = time.time()
    store.sends.finish(row.id, "PACS refused", None, retry_after_s=60)
    state = store.sends.state(row.id)
    assert state.state == "failed" and state.attempts == 1
    assert before + 59 <= state.next_attempt <= time.time() + 61
    assert store.sends.claim_due(5, 600) == []  # not due yet, whoever asks
    store.sends.finish(row.id, "PACS refused again", None, retry_after_s=60)
    state = store.sends.state(row.id)
    assert state.attempts == 2 and state.next_attempt >= before + 119  # doubled
    store.sends.queue(row.id, row.owner)  # Retry now
    assert store.sends.claim_due(5, 600) == [(row.id, row.owner)]
    store.sends.finish(row.id, None, "1.2.3")
    assert store.sends.state(row.id).state == "sent"


def test_the_rate_limiter_counts_through_the_stores_counters(store, tmp_path):
    from limits.storage import storage_from_string

    from app.store import ratelimits
    from app import create_app

    uri = ratelimits.storage_uri(store)
    limiter_storage = storage_from_string(uri, counters=store.counters)  # the app's options
    assert limiter_storage.counters is store.counters  # the store's own, not a second pool
    assert [limiter_storage.incr("login/1.2.3.4", 60) for _ in range(2)] == [1, 2]
    assert store.counters.get("login/1.2.3.4")[0] == 2 and limiter_storage.check()
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k" * 32,
            "DATA_DIR": str(tmp_path / "a"),
            "PREDICTOR": object(),
        }
    )
    options = app.config["RATELIMIT_STORAGE_OPTIONS"]
    assert options["counters"] is app.extensions["pneumo"].store.counters
    # a process that made no store of its own counts in the same table of the same database
    elsewhere = storage_from_string(uri)
    assert elsewhere.counters is not store.counters
    assert elsewhere.incr("login/1.2.3.4", 60) == 3 and elsewhere.get_expiry("login/1.2.3.4") > 0
    limiter_storage.clear("login/1.2.3.4")
    assert store.counters.get("login/1.2.3.4")[0] == 0


def _counts(connect) -> dict[str, int]:
    return {t: connect(f"SELECT COUNT(*) FROM {t}") for t in TABLES}


def test_a_database_made_by_the_last_release_upgrades_without_losing_a_row(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(RELEASE_1, data)
    with sqlite3.connect(data / "pneumo.sqlite3") as db:
        before = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        old_rows = db.execute("SELECT * FROM results ORDER BY id").fetchall()
    assert before["results"] == 3 and before["users"] == 2 and before["pacs_sends"] == 1
    store = Store(data)
    store.init()
    with store.db._connect() as db:
        assert migrations.version(db) == migrations.HEAD
        assert _counts(lambda sql: db.scalar(sql)) == before
    with sqlite3.connect(data / "pneumo.sqlite3") as db:
        columns = [c[1] for c in db.execute("PRAGMA table_info(results)")]
        new_rows = db.execute(
            f"SELECT {', '.join(columns[: len(old_rows[0])])} FROM results ORDER BY id"
        ).fetchall()
    assert new_rows == old_rows  # every value as it was
    uid = store.accounts.authenticate("alice", "correct horse battery")
    assert uid is not None
    results = store.results.list(f"user:{uid}")
    assert len(results) == 3 and store.results.read_file(results[0].id, "mask_rle.txt") == b"-1\n"
    assert store.sends.state("release1result01xxxxxxxxxx").last_error == "PACS down"
    store.init()  # a second start changes nothing
    with store.db._connect() as db:
        assert _counts(lambda sql: db.scalar(sql)) == before


def test_postgres_upgrades_from_version_1_without_losing_a_row(postgres, tmp_path):
    url = postgres.new_database()
    store = Store(tmp_path / "data", url)
    assert store.db.create_schema(target=1) == 1
    with sqlite3.connect(RELEASE_1 / "pneumo.sqlite3") as src, store.db._connect() as db:
        src.row_factory = sqlite3.Row
        for table in TABLES:
            for r in src.execute(f"SELECT * FROM {table}"):
                names = list(r.keys())
                db.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                    f"({', '.join(':' + n for n in names)})",
                    dict(r),
                )
        before = _counts(lambda sql: db.scalar(sql))
    assert store.db.create_schema() == migrations.HEAD
    with store.db._connect() as db:
        assert _counts(lambda sql: db.scalar(sql)) == before
    assert store.accounts.authenticate("alice", "correct horse battery") is not None
    assert store.sends.state("release1result01xxxxxxxxxx").state == "failed"


def test_migrations_make_every_result_field(store):
    with store.db._connect() as db:
        assert migrations._columns(db, "results") == {f.name for f in FIELDS}
        assert migrations.version(db) == migrations.HEAD


def test_nodes_starting_together_upgrade_once(postgres, tmp_path):
    url = postgres.new_database()
    errors: list[BaseException] = []

    def start(i: int):
        try:
            Store(tmp_path / f"node{i}", url).init()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with Store(tmp_path / "node0", url).db._connect() as db:
        assert [r["version"] for r in db.all("SELECT version FROM schema_version ORDER BY 1")] == [
            m.version for m in migrations.MIGRATIONS
        ]


def test_blob_store_keeps_files_and_purge_sweeps_files_without_a_row(tmp_path):
    bucket = f"memory://pneumo-{uuid.uuid4().hex}"
    store = Store(tmp_path / "data", blob_url=bucket)
    store.init()
    row = _row()
    _commit(store, row, b"\x00dicom bytes")
    assert store.results.read_file(row.id, "source.dcm") == b"\x00dicom bytes"
    assert store.results.add_file(row.id, "overlay.png", b"png")
    assert store.results.has_file(row.id, "overlay.png")
    assert not store.results.add_file("gone" + "x" * 20, "overlay.png", b"png")
    assert not (tmp_path / "data" / "results" / row.id).exists()  # not on the local disk
    orphan = store.results.stage("orphan" + "x" * 20)  # a node died before inserting its row
    orphan.put("source.dcm", b"half an upload")
    store.purge(older_than_days=1)
    assert store.results.has_file(orphan.result_id, "source.dcm")  # recent: may be mid-upload
    fs = store.files.fs
    for info in fs.ls(f"{store.files.results_dir}/{orphan.result_id}", detail=True):
        fs.store[info["name"]].created -= datetime.timedelta(hours=2)  # age it
    assert store.files.remove_orphans(set(store.results.all_ids())) == 1
    assert not store.results.has_file(orphan.result_id, "source.dcm")
    assert store.results.read_file(row.id, "source.dcm") == b"\x00dicom bytes"  # a kept result
    assert store.health() is None and store.free_bytes() is None
    fs.rm(store.files._marker)  # the store lost (a wrong bucket, a wiped prefix): said
    assert "blob store cannot be read" in store.health()


def test_a_shared_database_needs_a_shared_secret_key(postgres, tmp_path):
    from app import create_app
    from app.settings import SettingsError

    with pytest.raises(SettingsError, match="PNEUMO_SECRET_KEY"):
        create_app(
            {
                "TESTING": True,
                "DATA_DIR": str(tmp_path / "d"),
                "DATABASE_URL": postgres.new_database(),
                "PREDICTOR": object(),
            }
        )


def test_database_outage_is_a_503_and_the_app_recovers_without_a_restart(
    tmp_path, tiny_predictor, positive_dicom
):
    from helpers import pgserver
    from app import create_app

    server = pgserver.PostgresServer().start()
    try:
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "k" * 32,
                "DATA_DIR": str(tmp_path / "d"),
                "DATABASE_URL": server.url(),
                "PREDICTOR": tiny_predictor,
                "WARM_UP": False,
            }
        )
        client = app.test_client()
        data = positive_dicom.read_bytes()
        store = app.extensions["pneumo"].store
        store.accounts.create("alice", "correct horse battery")
        auth = {"Authorization": f"Bearer {store.accounts.create_token('alice')}"}

        def upload():
            return client.post(
                "/api/v1/predictions", headers=auth, data={"file": (io.BytesIO(data), "a.dcm")}
            )

        assert upload().status_code == 201
        assert client.get("/readyz").status_code == 200
        server.stop()
        down = upload()
        assert down.status_code == 503
        assert down.get_json()["error"]["code"] == "database_unavailable"
        assert client.get("/api/v1/predictions", headers=auth).status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
        server.resume()
        assert client.get("/readyz").status_code == 200
        up = upload()
        assert up.status_code == 201
        rid = up.get_json()["results"][0]["id"]
        assert client.get(f"/api/v1/predictions/{rid}", headers=auth).status_code == 200
        assert len(client.get("/api/v1/predictions", headers=auth).get_json()["results"]) == 2
    finally:
        server.close()


def test_scale_out_settings_are_checked_and_never_print_a_password(tmp_path):
    from app.settings import Settings, SettingsError, shared_secret_problem

    shared = Settings.from_env(
        {
            "PNEUMO_DATABASE_URL": "postgresql://pneumo:s3cret@db/pneumo",
            "PNEUMO_BLOB_URL": "s3://bucket/pneumo",
        }
    )
    assert shared.shared_database and shared.pacs_sender == "worker"
    assert "s3cret" not in str(shared.to_dict()) and "***" in shared.to_dict()["database_url"]
    assert "PNEUMO_SECRET_KEY" in shared_secret_problem(shared)
    assert Settings.from_env({}).pacs_sender == "web" and not Settings.from_env({}).shared_database
    assert (
        Settings.from_env(
            {"PNEUMO_DATABASE_URL": "postgresql://db/p", "PNEUMO_DICOMWEB_SENDER": "web"}
        ).pacs_sender
        == "web"
    )
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    from_file = Settings.from_env(
        {"PNEUMO_DATABASE_URL": "postgresql://db/p", "PNEUMO_SECRET_KEY_FILE": str(key)}
    )
    assert from_file.secret_key == "k" * 40 and shared_secret_problem(from_file) is None
    for env, message in (
        ({"PNEUMO_DATABASE_URL": "mysql://db/p"}, "DATABASE_URL"),
        ({"PNEUMO_SECRET_KEY": "short"}, "at least 16"),
        ({"PNEUMO_SECRET_KEY": "k" * 20, "PNEUMO_SECRET_KEY_FILE": str(key)}, "not both"),
        ({"PNEUMO_SECRET_KEY_FILE": str(tmp_path / "missing")}, "cannot be read"),
        ({"PNEUMO_DICOMWEB_SENDER": "nobody"}, "DICOMWEB_SENDER"),
    ):
        with pytest.raises(SettingsError, match=message):
            Settings.from_env(env)


def test_gunicorn_refuses_a_shared_database_without_a_shared_key(postgres, tmp_path):
    import os
    import subprocess
    import sys
    from conftest import ROOT
    from helpers.localserver import free_port

    env = dict(
        os.environ,
        PNEUMO_DATABASE_URL=postgres.new_database(),
        PNEUMO_INSTANCE_DIR=str(tmp_path),
        PNEUMO_PORT=str(free_port()),
    )
    env.pop("PNEUMO_SECRET_KEY", None)
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3
    assert "every node must sign logins with the same key" in out.stderr
    assert len([line for line in out.stderr.splitlines() if "refuses" in line]) == 1


def test_filters_search_and_first_copies_behave_alike(store):
    """The worklist's filters and search, and the first copy of a repeated upload, give the
    same answers on SQLite and PostgreSQL (LIKE with its escapes, review subqueries)."""
    from app.store.records import Review
    from app.store.results import Filter

    uid = store.accounts.create("rad", "a-long-password-1", "A", "radiologist")
    owner = f"user:{uid}"
    rows = [
        _row(owner, 1000.0, positive=True, search_text="scan_1.dcm | acc1 | doe jane", digest="d1"),
        _row(owner, 2000.0, positive=False, search_text="scan%2.dcm | acc2 | roe john"),
        _row("user:99", 3000.0, positive=True, search_text="other.dcm | doe jane"),
    ]
    for r in rows:
        _commit(store, r)
    store.reviews.add(Review(rows[1].id, owner, "rad", 2500.0, False, "missed", None))

    def ids(**kw):
        return {r.id for r in store.results.page(owner, where=Filter(**kw)).rows}

    mine = {rows[0].id, rows[1].id}
    assert ids() == mine
    assert ids(text="DOE") == {rows[0].id} and ids(text="scan%") == {rows[1].id}
    assert ids(text="scan_") == {rows[0].id} and ids(text="%") == {rows[1].id}
    assert ids(text="_") == {rows[0].id}
    assert ids(status="unreviewed") == {rows[0].id} and ids(status="disagreed") == {rows[1].id}
    assert ids(verdict="positive") == {rows[0].id} and ids(since=1500.0) == {rows[1].id}
    assert ids(until=1500.0) == {rows[0].id} and ids(uploader="user:99") == set()
    assert store.results.page(None, where=Filter(text="doe jane")).total == 2
    assert store.results.first_copy(owner, "d1", "").id == rows[0].id
    assert store.results.first_copy("user:99", "d1", "") is None  # not its result
    assert store.results.first_copy(owner, "", "") is None
