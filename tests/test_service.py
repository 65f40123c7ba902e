"""The one analysis service every entry point calls, the store behind it and the settings
tree: behaviour the re-cut (issue 21) promised, on real files."""

import io
import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import ROOT


@pytest.fixture()
def analyser(app):
    return app.extensions["pneumo"].analyser


def test_one_service_turns_every_failure_into_a_refusal(app, analyser, positive_dicom, monkeypatch):
    """A file the reader refuses, a full disk, an unexpected failure and a failed fetch each
    become a refusal with its own code and status; the good files around them are stored
    and handed to the on_result hook once each, even when a hook fails."""
    from app.pacs.client import PacsError
    from app.service import Item

    store = app.extensions["pneumo"].store
    data = positive_dicom.read_bytes()
    seen, calls = [], {"stage": 0}
    analyser.on_result(lambda row: seen.append(row.id))
    analyser.on_result(lambda row: 1 / 0)  # a broken hook never loses a stored result

    real_stage = store.results.stage

    def stage(result_id):
        calls["stage"] += 1
        if calls["stage"] == 2:
            raise OSError(28, "No space left on device")
        return real_stage(result_id)

    monkeypatch.setattr(store.results, "stage", stage)

    def fetch_fails():
        raise PacsError("The PACS at http://pacs could not be reached (is it running?).")

    items = [
        Item("good.dcm", data),
        Item("notes.txt", b"not an image at all"),
        Item("disk.dcm", data),
        Item("pacs.dcm", fetch_fails),
        Item("last.dcm", data),
    ]
    outcome = analyser.analyse_many(items, "session:test", as_batch=True)
    kinds = [(name, getattr(entry, "code", "stored")) for name, entry in outcome.entries]
    assert kinds == [
        ("good.dcm", "stored"),
        ("notes.txt", "unsupported_format"),
        ("disk.dcm", "storage_unavailable"),
        ("pacs.dcm", "pacs_error"),
        ("last.dcm", "stored"),
    ]
    assert [e.status for e in outcome.errors] == [415, 503, 502]
    assert seen == [row.id for _, row in outcome.results]
    assert outcome.batch and store.batches.get(outcome.batch, "session:test")["files"] == 5
    assert all(store.results.get(row.id, "session:test") for _, row in outcome.results)

    # anything unexpected: a 500 refusal for that file alone, logged without its content
    def predictor_breaks():
        raise RuntimeError("the message may quote file contents")

    monkeypatch.setattr(analyser, "_predictor", predictor_breaks)
    outcome = analyser.analyse_many([Item("x.dcm", data)], "session:test")
    (refused,) = outcome.errors
    assert refused.code == "internal_error" and refused.status == 500 and outcome.status == 500
    assert "quote" not in refused.message


def test_whole_request_refusals(analyser, positive_dicom):
    from app.service import Item

    empty = analyser.analyse_many([], "o")
    assert empty.status == 400 and empty.errors[0].code == "no_file"
    many = analyser.analyse_many([Item(f"{i}.dcm", b"x") for i in range(6)], "o")  # MAX_FILES 5
    assert many.status == 413 and "at most 5" in many.errors[0].message and not many.entries


def test_stow_refuses_an_instance_on_a_full_disk_with_out_of_resources(
    app, positive_dicom, monkeypatch
):
    """The receiver's failure reasons come from the service's refusals (0xA700 for storage)."""
    from app import dicomweb

    store = app.extensions["pneumo"].store

    def full(result_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.results, "stage", full)
    data = positive_dicom.read_bytes()
    with app.test_request_context():
        ((header, row, failure),) = dicomweb.store_instances(
            [("application/dicom", data)], "user:1"
        )
    assert row is None and failure[0] == dicomweb.OUT_OF_RESOURCES
    assert str(header.SOPInstanceUID) == str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def test_store_hands_out_bytes_and_keeps_files_whole(app, client, positive_dicom):
    from app import renditions
    from app.store.files import LocalFiles

    store = app.extensions["pneumo"].store
    resp = client.post(
        "/upload",
        content_type="multipart/form-data",
        data={
            "files": [(io.BytesIO(positive_dicom.read_bytes()), "a.dcm")],
            "csrf_token": _csrf(client),
        },
    )
    rid = resp.headers["Location"].rsplit("/", 1)[-1]
    row = store.results.get_any(rid)
    assert store.results.read_file(rid, "source.dcm") == positive_dicom.read_bytes()
    assert store.results.read_file(rid, "overlay.png") is None  # rendered on first request only
    # the worklist's thumbnail is written with the result: at most 160 px a side, the
    # predicted mask filled in (the tiny model's mask covers part of this film)
    thumb = Image.open(io.BytesIO(store.results.read_file(rid, "thumb.jpg")))
    assert thumb.format == "JPEG" and max(thumb.size) == renditions.THUMB_SIDE
    rgb = np.asarray(thumb.convert("RGB")).astype(int)
    tinted = (np.abs(rgb[..., 0] - rgb[..., 2]) > 40).mean()
    assert (tinted > 0.005) == bool(row.area_px), tinted
    png = renditions.artefact(store.results, row, "overlay.png")
    assert png.startswith(b"\x89PNG") and store.results.read_file(rid, "overlay.png") == png
    seg = renditions.seg_dataset(store.results, row)  # the SEG travels as a dataset, not as bytes
    assert seg.Modality == "SEG" and str(seg.SOPInstanceUID).startswith("2.25.")
    files = LocalFiles(store.root)
    for bad in ("../pneumo.sqlite3", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            files.read(rid, bad)
    assert store.delete(rid, row.owner) and store.results.read_file(rid, "source.dcm") is None
    assert not store.results.add_file(rid, "overlay.png", png)  # a late render cannot revive it


def _csrf(client):
    client.get("/")
    with client.session_transaction() as s:
        return s["csrf"]


def test_settings_tree_reads_every_documented_variable():
    """Every PNEUMO_* variable README and its chapters (docs/*.md) document is read by the
    settings (or is one of the few that belong to scripts), each switch follows the one
    truth rule, and a bad value names its variable."""
    from app.settings import Settings, SettingsError, setting_names

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    documented = {
        v
        for page in pages
        for v in re.findall(r"PNEUMO_[A-Z_]+[A-Z](?![A-Z_]*\*)", page.read_text())
    }
    not_settings = {
        "PNEUMO_VENV",
        "PNEUMO_HOME",
        "PNEUMO_FUZZ_CASES",
        "PNEUMO_MODEL",
        "PNEUMO_SCREENSHOT_DIR",
    }
    read = {f"PNEUMO_{name}" for name in setting_names()}  # what Settings.from_env reads
    assert documented - not_settings <= read, documented - not_settings - read
    for value, expected in (("on", True), ("YES", True), ("0", False), ("off", False)):
        s = Settings.from_env(
            {
                "PNEUMO_WARM_UP": value,
                "PNEUMO_DICOMWEB_AUTOSEND": value,
                "PNEUMO_SESSION_COOKIE_SECURE": value,
            }
        )
        assert s.warm_up is s.pacs.autosend is s.session_cookie_secure is expected
    s = Settings.from_env(
        {
            "PNEUMO_MAX_FILES": "7",
            "PNEUMO_UPLOAD_RATE_LIMIT": "5 per minute",
            "PNEUMO_DICOMWEB_URL": "http://pacs/dicom-web/",
        }
    )
    assert s.max_files == 7 and s.upload_rate_limit == "5 per minute"
    assert s.pacs.url == "http://pacs/dicom-web"
    # a test's mapping names the same variables without the prefix, parsed the same way
    mapped = Settings.from_mapping(
        {"MAX_FILES": "7", "DICOMWEB_URL": "http://pacs/dicom-web/", "TESTING": True}, env={}
    )
    assert mapped.max_files == 7 and mapped.pacs.url == "http://pacs/dicom-web"
    assert set(s.flask_config()) <= {
        "SECRET_KEY",
        "SESSION_COOKIE_SECURE",
        "PERMANENT_SESSION_LIFETIME",
        "MAX_CONTENT_LENGTH",
    }
    for bad in (
        {"PNEUMO_WARM_UP": "maybe"},
        {"PNEUMO_MAX_FILES": "many"},
        {"PNEUMO_DICOMWEB_TIMEOUT": "-1"},
        {"PNEUMO_MAX_REQUESTS": "x"},
    ):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            Settings.from_env(bad)
    assert "password" not in str(
        Settings.from_env(
            {"PNEUMO_ACCESS_PASSWORD": "sekrit-pw", "PNEUMO_DICOMWEB_PASSWORD": "x"}
        ).to_dict()
    )


def test_settings_command_prints_what_the_service_sees(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PNEUMO_INSTANCE_DIR": str(tmp_path),
        "PNEUMO_RETENTION_DAYS": "7",
        "PNEUMO_ACCESS_PASSWORD": "not-to-be-printed",
    }

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "settings", *a],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )

    assert run("data_dir").stdout.strip() == str(tmp_path / "data")
    assert run("retention_days").stdout.strip() == "7.0"
    full = run()
    assert full.returncode == 0 and "not-to-be-printed" not in full.stdout
    assert run("nonsense").returncode == 2


def test_gunicorn_master_reads_settings_without_loading_keras():
    """gunicorn's master imports the settings and the store (gunicorn.conf.py), never Keras
    or TensorFlow, which do not survive fork."""
    code = (
        "import runpy, sys; runpy.run_path('gunicorn.conf.py'); "
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]


def test_pneumo_command_takes_device_and_runtime_from_the_settings(monkeypatch):
    """The core's commands default to auto/keras; the `pneumo` command (app.cli) sets their
    defaults from the settings, so PNEUMO_DEVICE and PNEUMO_RUNTIME mean the same everywhere."""
    from app.cli import build_parser
    from pneumo.cli import build_parser as core_parser

    monkeypatch.setenv("PNEUMO_DEVICE", "cpu")
    monkeypatch.setenv("PNEUMO_RUNTIME", "openvino")
    args = build_parser().parse_args(["predict", "x.dcm", "--submission", "s.csv"])
    assert (args.device, args.runtime) == ("cpu", "openvino")
    core = core_parser().parse_args(["predict", "x.dcm", "--submission", "s.csv"])
    assert (core.device, core.runtime) == ("auto", "auto")
    monkeypatch.setenv("PNEUMO_DEVICE", "tpu")
    with pytest.raises(ValueError, match="PNEUMO_DEVICE"):
        build_parser()


def test_a_batch_interrupted_midway_keeps_its_page_and_no_folder_lacks_a_row(
    app, analyser, positive_dicom
):
    """Hardening III item 9: a worker killed mid-batch (here: the second file's read never
    returns) leaves a batch whose page lists what was stored; a result folder whose row was
    never written is swept when the store starts again."""
    import os
    import time

    from app.service import Item
    from app.store.repository import Store

    store = app.extensions["pneumo"].store

    def killed():
        raise SystemExit("the worker was killed")

    items = [Item("a.dcm", positive_dicom.read_bytes()), Item("b.dcm", killed)]
    with pytest.raises(SystemExit):
        analyser.analyse_many(items, "owner-x", as_batch=True)
    batches = store.results.list("owner-x")
    assert len(batches) == 1 and batches[0].batch
    assert store.batches.get(batches[0].batch, "owner-x")["files"] == 2
    # files published without their row (killed between the two), an hour ago
    staged = store.results.stage("0" * 22)
    with open(os.path.join(staged.folder, "image.png"), "wb") as f:
        f.write(b"\x89PNG")
    store.files.publish(staged)
    old = time.time() - 3600
    os.utime(store.files.results_dir / ("0" * 22), (old, old))
    Store(store.root).init()
    assert not (store.files.results_dir / ("0" * 22)).exists()
    assert (store.files.results_dir / batches[0].id).exists()


def test_the_login_rule_asks_the_database_only_beyond_loopback():
    """On loopback the service starts whatever the database says (a damaged one is
    reported by /readyz); beyond it, a login must exist."""
    from app.settings import Settings, login_problem

    def broken():
        raise AssertionError("the database was asked")

    assert login_problem(Settings.from_env({}), broken) is None
    beyond = Settings.from_env({"PNEUMO_HOST": "0.0.0.0"})
    assert "no login is configured" in login_problem(beyond, lambda: 0)
    assert login_problem(beyond, lambda: 2) is None and login_problem(beyond, 1) is None
