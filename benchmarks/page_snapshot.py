"""Every page's HTML and the API's JSON for one fixed result, for a re-cut's "behaviour
unchanged" check (issue 33): run it on two checkouts and diff the folders.

    python benchmarks/page_snapshot.py OUT_DIR

An untrained tiny model (seeded, so the same weights on every run) reads one real SIIM
DICOM through the app's test client: an admin and a radiologist in one team, one
upload, one review. Each page is written with what differs from run to run replaced by
a placeholder (result and batch ids, CSRF tokens, times, durations), so a difference
left over is a difference of behaviour.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SIIM, write_untrained_model  # noqa: E402

PAGES = [
    "/",
    "/worklist",
    "/results/{rid}",
    "/results/{rid}/identifiers",
    "/api/v1/predictions",
    "/api/v1/predictions/{rid}",
    "/api/v1/predictions/{rid}/reviews",
    "/api/v1/openapi.json",
    "/api/docs",
    "/docs",
    "/agreement",
    "/api/v1/agreement",
    "/admin/audit",
    "/admin/",
    "/pacs",
    "/results/{rid}/pacs",
    "/readyz",
    "/healthz",
    "/login",
]


def normalise(text: str, ids: dict[str, str]) -> str:
    for value, name in ids.items():
        text = text.replace(value, name)
    text = re.sub(r'(name="csrf_token" value=")[^"]+', r"\1CSRF", text)
    text = re.sub(r'("csrf[_a-z]*":\s*")[^"]+', r"\1CSRF", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00|Z)?", "TIME", text)
    text = re.sub(r'("(created|at|updated|[a-z_]+_s)":\s*)[0-9.e-]+', r"\1N", text)
    text = re.sub(r'(data-(epoch|[a-z-]*time[a-z-]*)=")[^"]+', r"\1N", text)
    text = re.sub(r'("free_disk_mb":\s*)\d+', r"\1N", text)
    return text


def main(out: Path) -> int:
    from app import create_app
    from pneumo.inference.predictor import Predictor

    out.mkdir(parents=True, exist_ok=True)
    dicom = sorted(SIIM.rglob("*.dcm"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        arch = {
            "name": "double_unet",
            "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
        }
        folder = write_untrained_model(Path(tmp) / "tiny", arch, {"size": 64, "channels": 1})
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "snapshot-key-0123456789",
                "DATA_DIR": str(Path(tmp) / "data"),
                "PREDICTOR": Predictor.load(folder),
            }
        )
        ext = app.extensions  # before the re-cut: one key per service, the store flat
        store = ext["pneumo"].store if "pneumo" in ext else ext["pneumo.store"]
        create = store.accounts.create if hasattr(store, "accounts") else store.create_user
        create("ada", "a-long-password-1", team="chest", role="admin")
        create("rad", "a-long-password-2", team="chest", role="radiologist")
        client = app.test_client()
        client.get("/login")
        with client.session_transaction() as s:
            token = s.get("csrf", "")
        client.post(
            "/login", data={"username": "ada", "password": "a-long-password-1", "csrf_token": token}
        )
        client.get("/")
        with client.session_transaction() as s:
            token = s["csrf"]
        resp = client.post(
            "/upload",
            content_type="multipart/form-data",
            data={"files": [(io.BytesIO(dicom.read_bytes()), "chest.dcm")], "csrf_token": token},
        )
        rid = resp.headers["Location"].rsplit("/", 1)[-1]
        client.post(
            f"/api/v1/predictions/{rid}/review",
            json={"agrees": True},
            headers={"X-CSRF-Token": token},
        )
        ids = {rid: "RID", rid[:12]: "RID12", token: "CSRF"}
        for page in PAGES:
            url = page.format(rid=rid)
            r = client.get(url)
            name = url.strip("/").replace(rid, "RID").replace("/", "_") or "index"
            body = r.get_data(as_text=True)
            if r.mimetype == "application/json":
                body = json.dumps(r.get_json(), indent=1, sort_keys=True)
            (out / f"{name}.txt").write_text(
                f"{r.status_code} {r.mimetype}\n" + normalise(body, ids)
            )
    print(f"{len(PAGES)} pages written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
