"""Several app nodes on one shared PostgreSQL and one shared blob folder, each a real
gunicorn on its own loopback port (tiny untrained model), a real PostgreSQL and a real
Orthanc started here: what one node stores the other serves; concurrent uploads over
both lose and cross nothing; a node killed mid-upload loses nothing it acknowledged and
leaves no row without files; two PACS workers send each SEG once; a database restart is
answered with 503 and recovered from without restarting the app."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import pgserver
from conftest import ROOT
from helpers.localserver import LocalServer, multipart_file

sys.path.insert(0, str(ROOT / "scripts"))
import loadtest  # noqa: E402

pytestmark = pytest.mark.slow
SECRET = secrets.token_hex(32)


def _env(database_url: str, blob: Path, **more) -> dict:
    return {
        "PNEUMO_DATABASE_URL": database_url,
        "PNEUMO_BLOB_URL": str(blob),
        "PNEUMO_SECRET_KEY": SECRET,
        "PNEUMO_UPLOAD_RATE_LIMIT": "100000 per minute",
        "PNEUMO_LOG_LEVEL": "WARNING",
        **more,
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One PostgreSQL server and one blob folder for the module."""
    server = pgserver.PostgresServer().start()
    yield server, tmp_path_factory.mktemp("blob")
    server.close()


@pytest.fixture(scope="module")
def nodes(shared, tiny_model_folder, tmp_path_factory):
    """Two app nodes (A, B) sharing the database and the blob folder."""
    server, blob = shared
    url = server.new_database()
    started = []
    try:
        for name in ("a", "b"):
            started.append(
                LocalServer(
                    tiny_model_folder,
                    tmp_path_factory.mktemp(f"node-{name}"),
                    workers=1,
                    threads=4,
                    env=_env(url, blob),
                )
            )
        yield started[0], started[1], url, blob
    finally:
        for node in started:
            node.stop()


def _store(url: str, blob: Path):
    from app.store.repository import Store

    return Store(blob.parent / "unused", url, str(blob))


def _complete(store, result_id: str) -> bool:
    return all(
        store.results.has_file(result_id, n) for n in ("pixels.npy", "prob.png", "mask_rle.txt")
    )


def test_an_upload_on_one_node_is_served_by_the_other(nodes):
    a, b, url, blob = nodes
    image = loadtest.pick_images(1)[0]
    on_a = loadtest.Client(a.url)
    result = on_a.upload(image)["results"][0]
    on_b = loadtest.Client(b.url)
    on_b.opener = on_a.opener  # the same browser: its session cookie is valid on B too
    worklist = json.loads(on_b.get("/api/v1/predictions"))["results"]
    assert [r["id"] for r in worklist] == [result["id"]]
    page = on_b.get(f"/results/{result['id']}").decode()
    assert result["id"] in page and "pneumothorax" in page.lower()
    for name, link in result["links"].items():
        if link and name not in ("self", "page"):
            assert on_b.get(link) == on_a.get(link), name  # byte-identical from both nodes
    stranger = loadtest.Client(b.url)
    with pytest.raises(urllib.error.HTTPError) as err:
        stranger.get(f"/results/{result['id']}")
    assert err.value.code == 404
    err.value.close()


def test_concurrent_uploads_over_two_nodes_lose_and_cross_nothing(nodes):
    a, b, url, blob = nodes
    images = loadtest.pick_images(100)
    servers = [a.url if i % 2 else b.url for i in range(len(images))]
    clients = [loadtest.Client(u) for u in servers]
    outcomes: list[dict | None] = [None] * len(images)
    errors: list[str] = []

    def one(i: int):
        try:
            outcomes[i] = clients[i].upload(images[i])
        except Exception as exc:  # noqa: BLE001 - counted below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert errors == []
    import numpy as np
    from PIL import Image

    from pneumo.io.imaging import read_image

    crossed = 0
    for i, body in enumerate(outcomes):
        rid, image_link = body["results"][0]["id"], body["results"][0]["links"]["image"]
        # read back through the OTHER node, with the uploader's own session
        other = loadtest.Client(b.url if servers[i] == a.url else a.url)
        other.opener = clients[i].opener
        stored = np.asarray(Image.open(io.BytesIO(other.get(image_link))))
        crossed += not np.array_equal(stored, read_image(images[i]).pixels)
        mine = json.loads(other.get("/api/v1/predictions"))["results"]
        assert [r["id"] for r in mine] == [rid]  # each uploader sees only its own
    assert crossed == 0
    store = _store(url, blob)
    ids = store.results.all_ids()
    assert len(ids) >= 100 and all(_complete(store, rid) for rid in ids)
    store.close()


def test_a_node_killed_mid_upload_loses_nothing_it_acknowledged(
    nodes, shared, tiny_model_folder, tmp_path
):
    a, b, url, blob = nodes
    doomed = LocalServer(
        tiny_model_folder, tmp_path / "node-k", workers=1, threads=4, env=_env(url, blob)
    )
    images = loadtest.pick_images(24)
    clients = [loadtest.Client(doomed.url) for _ in images]
    outcomes: list[dict | None] = [None] * len(images)

    def one(i: int):
        try:
            outcomes[i] = clients[i].upload(images[i])
        except Exception:  # noqa: BLE001 - the node dies under it
            pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while not any(outcomes) and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(doomed.proc.pid, signal.SIGKILL)  # the whole node: master and workers
    for t in threads:
        t.join(120)
    doomed.stop()
    acknowledged = [(i, o["results"][0]["id"]) for i, o in enumerate(outcomes) if o]
    assert acknowledged and len(acknowledged) < len(images)  # killed mid-load
    for i, rid in acknowledged:  # every acknowledged result is served by a surviving node
        survivor = loadtest.Client(b.url)
        survivor.opener = clients[i].opener
        assert json.loads(survivor.get(f"/api/v1/predictions/{rid}"))["id"] == rid
    store = _store(url, blob)
    assert all(_complete(store, rid) for rid in store.results.all_ids())  # no row without files
    store.close()


def test_two_pacs_workers_send_each_seg_once(shared, tiny_model_folder, tmp_path):
    from helpers.orthanc import ORTHANC_PASSWORD, ORTHANC_USER, Orthanc

    server, _ = shared
    url, blob = server.new_database(), tmp_path / "blob"
    orthanc = Orthanc(tmp_path / "orthanc")
    env = _env(
        url,
        blob,
        PNEUMO_DICOMWEB_URL=orthanc.dicomweb_url,
        PNEUMO_DICOMWEB_USERNAME=ORTHANC_USER,
        PNEUMO_DICOMWEB_PASSWORD=ORTHANC_PASSWORD,
        PNEUMO_DICOMWEB_AUTOSEND="1",
    )
    node = LocalServer(tiny_model_folder, tmp_path / "node", workers=1, threads=4, env=env)
    try:
        dicoms = [p for p in loadtest.pick_images(40) if p.suffix == ".dcm"][:12]
        ids = [loadtest.Client(node.url).upload(p)["results"][0]["id"] for p in dicoms]
        store = _store(url, blob)
        time.sleep(1.0)
        # the web node only enqueued (PNEUMO_DICOMWEB_SENDER defaults to worker here)
        assert {store.sends.state(rid).state for rid in ids} == {"queued"}
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "app.cli", "pacs", "worker", "--once", "--poll", "0.2"],
                cwd=ROOT,
                env=dict(os.environ, **env, PNEUMO_DATA_DIR=str(tmp_path / f"w{i}")),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        logs = [w.communicate(timeout=300)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], logs
        sent = [int(log.rsplit("stopped after ", 1)[1].split()[0]) for log in logs]
        assert sum(sent) == len(ids), logs  # each send tried by exactly one worker
        states = [store.sends.state(rid) for rid in ids]
        assert all(s.state == "sent" and s.attempts == 1 for s in states), states
        import requests

        for state in states:  # every SEG is on the PACS
            found = requests.post(
                orthanc.url + "/tools/lookup", data=state.seg_sop_uid, auth=orthanc.auth, timeout=30
            ).json()
            assert [f["Type"] for f in found] == ["Instance"], state
        store.close()
    finally:
        node.stop()
        orthanc.stop()


def test_a_database_restart_under_load_is_503_then_recovers(tiny_model_folder, tmp_path):
    server = pgserver.PostgresServer().start()
    node = None
    try:
        node = LocalServer(
            tiny_model_folder,
            tmp_path / "node",
            workers=1,
            threads=4,
            env=_env(server.url(), tmp_path / "blob"),
            log_path=tmp_path / "node.log",
        )
        subprocess.run(
            [sys.executable, "-m", "app.cli", "create-user", "alice", "--password-stdin"],
            input="correct horse battery",
            text=True,
            cwd=ROOT,
            check=True,
            capture_output=True,
            env=dict(
                os.environ,
                **_env(server.url(), tmp_path / "blob"),
                PNEUMO_DATA_DIR=str(tmp_path / "cli"),
            ),
        )
        token = subprocess.run(
            [sys.executable, "-m", "app.cli", "create-token", "alice"],
            text=True,
            cwd=ROOT,
            check=True,
            capture_output=True,
            env=dict(
                os.environ,
                **_env(server.url(), tmp_path / "blob"),
                PNEUMO_DATA_DIR=str(tmp_path / "cli"),
            ),
        ).stdout.strip()
        image = loadtest.pick_images(1)[0]
        body, ctype = multipart_file(image.read_bytes(), "f.dcm")
        seen: list[tuple[str, int, str | None]] = []
        phase = ["before"]
        stop = threading.Event()

        def load():
            while not stop.is_set():
                req = urllib.request.Request(
                    node.url + "/api/v1/predictions",
                    data=body,
                    method="POST",
                    headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        seen.append((phase[0], r.status, json.loads(r.read())["results"][0]["id"]))
                except urllib.error.HTTPError as exc:
                    seen.append((phase[0], exc.code, None))
                    exc.close()

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(3)
        server.stop()
        phase[0] = "down"
        time.sleep(4)
        try:
            urllib.request.urlopen(node.url + "/readyz", timeout=10)
            ready_down = 200
        except urllib.error.HTTPError as exc:
            ready_down = exc.code
            exc.close()
        server.resume()
        phase[0] = "after"
        time.sleep(5)
        stop.set()
        for t in threads:
            t.join(120)
        statuses = {(p, s) for p, s, _ in seen}
        assert {s for _, s in statuses} <= {201, 503}, (
            statuses,
            (tmp_path / "node.log").read_text()[-4000:],
        )  # never a 500
        assert ("down", 503) in statuses and ready_down == 503
        assert ("after", 201) in statuses  # recovered without restarting the app
        assert node.proc.poll() is None
        auth = {"Authorization": f"Bearer {token}"}
        for _, status, rid in seen:
            if status == 201:  # nothing acknowledged was lost
                req = urllib.request.Request(f"{node.url}/api/v1/predictions/{rid}", headers=auth)
                with urllib.request.urlopen(req, timeout=30) as r:
                    assert r.status == 200
    finally:
        if node is not None:
            node.stop()
        server.close()
