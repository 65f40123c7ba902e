#!/usr/bin/env python3
"""Bounded load and fault test against a gunicorn started here on 127.0.0.1.

    .venv/bin/python scripts/loadtest.py [--uploads 100] [--workers 2] [--model DIR] [--kill]

Sends ``--uploads`` concurrent uploads of distinct real SIIM images, then
checks every result: it exists, belongs to its uploader, and its stored
X-ray equals the uploaded image pixel for pixel (no crossed results). With
``--kill`` one worker is killed mid-load: its requests may fail, the others
must finish, and no half-written result may be visible. Prints a JSON report.
Only loopback is contacted; the run stops by itself.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the gunicorn harness lives with the tests
SIIM = ROOT.parent / "shared" / "data" / "siim"


def pick_images(n: int) -> list[Path]:
    """``n`` real images with distinct content (copies of one file are skipped)."""
    import hashlib

    files = sorted(SIIM.rglob("*.dcm")) + sorted(SIIM.glob("amarshrma/Deployment/Images/*.jpg"))
    seen, out = set(), []
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(f)
        if len(out) == n:
            break
    return out


class Client:
    """One uploader: own cookie jar, so results are checked as that uploader sees them."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def upload(self, path: Path) -> dict:
        from helpers.localserver import multipart_file

        # start a session first (a cookie-less call would get its result without links);
        # a POST that rides on the session cookie sends the session's CSRF token
        csrf = json.loads(self.get("/api/v1/csrf-token"))["csrf_token"]
        body, ctype = multipart_file(path.read_bytes(), f"f{path.suffix}")
        req = urllib.request.Request(
            self.url + "/api/v1/predictions",
            data=body,
            method="POST",
            headers={"Content-Type": ctype, "X-CSRF-Token": csrf},
        )
        with self.opener.open(req, timeout=300) as resp:
            return json.loads(resp.read())

    def get(self, path: str) -> bytes:
        with self.opener.open(self.url + path, timeout=60) as resp:
            return resp.read()


def run(uploads: int, workers: int, model_dir: Path, kill: bool, threads: int = 4) -> dict:
    import shutil
    from pneumo.io.imaging import read_image
    from helpers.localserver import LocalServer

    data = Path(tempfile.mkdtemp(prefix="pneumo-load-"))
    server = LocalServer(
        model_dir,
        data,
        workers=workers,
        threads=threads,
        env={"PNEUMO_UPLOAD_RATE_LIMIT": "100000 per minute", "PNEUMO_LOG_LEVEL": "WARNING"},
    )
    url = server.url
    images = pick_images(uploads)
    outcomes: list[dict | None] = [None] * len(images)
    errors: list[str] = []
    clients = [Client(url) for _ in images]

    def one(i: int):
        try:
            outcomes[i] = clients[i].upload(images[i])
        except Exception as exc:  # noqa: BLE001 - counted and named in the report
            errors.append(type(exc).__name__)

    senders = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    t0 = time.time()
    for t in senders:
        t.start()
    killed = None
    if kill:
        # kill as soon as the first answer arrives: the load is then still in flight,
        # however fast the model is (a fixed delay missed it once uploads got faster)
        deadline = time.time() + 120
        while not any(outcomes) and not errors and time.time() < deadline:
            time.sleep(0.01)
        children = server.worker_pids()
        if children:
            killed = children[0]
            os.kill(killed, signal.SIGKILL)
    for t in senders:
        t.join(timeout=600)
    wall = time.time() - t0
    crossed, missing, ok = 0, 0, 0
    for i, body in enumerate(outcomes):
        if not body or not body.get("results"):
            continue
        res = body["results"][0]
        try:
            png = clients[i].get(res["links"]["image"])
        except Exception:  # noqa: BLE001 - a missing image is counted
            missing += 1
            continue
        stored = np.asarray(Image.open(io.BytesIO(png)))
        if np.array_equal(stored, read_image(images[i]).pixels):
            ok += 1
        else:
            crossed += 1
    # every visible result must be complete: row + all files
    from app.store.repository import Store

    results = Store(data / "data").results
    incomplete = 0
    for rid in results.all_ids():
        if not all(results.has_file(rid, n) for n in ("pixels.npy", "prob.png", "mask_rle.txt")):
            incomplete += 1
    server.stop()
    stored = len(results.all_ids())
    shutil.rmtree(data, ignore_errors=True)
    return {
        "uploads": len(images),
        "workers": workers,
        "threads_per_worker": threads,
        "killed_worker": killed,
        "wall_s": round(wall, 1),
        "answered": sum(1 for o in outcomes if o),
        "client_errors": len(errors),
        "verified_own_image": ok,
        "crossed": crossed,
        "result_missing": missing,
        "stored_results": stored,
        "incomplete_visible_results": incomplete,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    from pneumo.paths import default_model_dir

    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--threads", type=int, default=4, help="threads per worker")
    p.add_argument("--kill", action="store_true", help="kill one worker mid-load")
    args = p.parse_args()
    report = run(args.uploads, args.workers, Path(args.model), args.kill, args.threads)
    print(json.dumps(report, indent=2))
    good = report["crossed"] == 0 and report["incomplete_visible_results"] == 0
    if not args.kill:
        good = good and report["verified_own_image"] == report["uploads"]
    else:  # a killed worker loses at most what it was working on
        good = good and report["client_errors"] <= report["threads_per_worker"]
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
