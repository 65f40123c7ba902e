"""``pneumo reread --since``: the stored studies of a date range read again by a model,
each read kept beside the first (the result) under the model's name and version."""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_stored_studies_are_read_again_and_kept_beside_the_first(
    app, tiny_model_folder, positive_dicom
):
    from conftest import SIIM

    store = app.extensions["pneumo"].store
    client = app.test_client()
    store.accounts.create("rita", "a-long-password-1")  # a one-off call would keep nothing
    auth = {"Authorization": f"Bearer {store.accounts.create_token('rita')}"}
    ids = []
    jpegs = sorted(SIIM.glob("amarshrma/Deployment/Images/*.jpg"))[:2]
    for path in [positive_dicom] + jpegs:
        resp = client.post(
            "/api/v1/predictions",
            headers=auth,
            data={"file": (io.BytesIO(path.read_bytes()), path.name)},
        )
        assert resp.status_code == 201
        ids.append(resp.get_json()["results"][0]["id"])
    png = client.post(
        "/api/v1/predictions",
        headers=auth,
        data={"file": (io.BytesIO((ROOT / "static" / "favicon.svg").read_bytes()), "x.svg")},
    )
    assert png.status_code == 415  # not stored: nothing to re-read
    store.files.delete(ids[2])  # a study whose files are gone gives an error read
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    env = dict(os.environ, PNEUMO_DATA_DIR=str(app.extensions["pneumo"].settings.data_dir))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "reread",
            "--since",
            today,
            "--model",
            str(tiny_model_folder),
            "--batch-size",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == {**counts, "studies": 3, "read": 2, "no_verdict": 1}
    for rid in ids[:2]:
        row, reads = store.results.get_any(rid), store.reads.for_result(rid)
        assert len(reads) == 1 and reads[0].error is None
        assert reads[0].model.startswith(row.model.split(" (")[0])
        assert abs(reads[0].probability - row.probability) < 1e-5  # same model, same number
        assert reads[0].positive == row.positive and reads[0].rle == row.rle
    assert "gone" in store.reads.for_result(ids[2])[0].error
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "reread",
            "--since",
            today,
            "--until",
            today,
            "--model",
            str(tiny_model_folder),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0
    assert len(store.reads.for_result(ids[0])) == 1  # replaced, not doubled
    none = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "reread",
            "--since",
            "2001-01-01",
            "--until",
            "2001-01-02",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert none.returncode == 1 and "no stored studies" in none.stderr
