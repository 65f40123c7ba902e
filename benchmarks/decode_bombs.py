"""Small files that decode huge, sent at once (Hardening II item 2).

    python benchmarks/decode_bombs.py [--requests 8] [--files 2] [--side 7000]

Starts the app with the bundled model (one worker, 4 threads, as `scripts/run.sh`),
makes a 16-bit PNG of --side x --side pixels that compresses to ~95 KB, sends
--requests concurrent uploads of --files such files each, probes /healthz every
0.5 s meanwhile and prints one JSON line: the worker's peak resident memory before and
after (VmHWM, MB), /healthz latencies, the uploads' statuses and seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the gunicorn harness lives with the tests

from helpers.localserver import LocalServer, multipart_files, peak_rss_mb, probe_latencies  # noqa: E402
from pneumo.paths import default_model_dir  # noqa: E402


def bomb_png(side: int) -> bytes:
    """A 16-bit grey PNG, mostly flat (so it compresses to almost nothing)."""
    a = np.zeros((side, side), np.uint16)
    a[side // 2 : side // 2 + 100, side // 2 : side // 2 + 100] = 40000
    a[100:200, :] = 1000
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def run(
    server_url: str, worker: int, requests: int, files: int, png: bytes, seconds: float = 40.0
) -> dict:
    body, ctype = multipart_files([(png, f"bomb{i}.png") for i in range(files)])
    before = peak_rss_mb(worker)
    results = []

    def post():
        t = time.perf_counter()
        req = urllib.request.Request(
            server_url + "/api/v1/predictions", data=body, headers={"Content-Type": ctype}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                out = json.loads(resp.read())
                status = resp.status
        except urllib.error.HTTPError as exc:
            with exc:
                out, status = json.loads(exc.read() or b"{}"), exc.code
        codes = [e["code"] for e in out.get("errors", [])] or ["stored"] * len(out["results"])
        results.append(
            {"status": status, "seconds": round(time.perf_counter() - t, 2), "files": codes}
        )

    threads = [threading.Thread(target=post) for _ in range(requests)]
    for t in threads:
        t.start()
    lat = probe_latencies(server_url + "/healthz", seconds)
    for t in threads:
        t.join(120)
    return {
        "png_bytes": len(png),
        "requests": requests,
        "files_per_request": files,
        "rss_peak_before_mb": round(before),
        "rss_peak_after_mb": round(peak_rss_mb(worker)),
        "healthz_max_s": round(max(lat), 3),
        "healthz_median_s": round(statistics.median(lat), 3),
        "uploads": sorted(results, key=lambda r: r["seconds"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--side", type=int, default=7000)
    ap.add_argument("--seconds", type=float, default=40.0)
    args = ap.parse_args()
    png = bomb_png(args.side)
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalServer(default_model_dir(), Path(tmp) / "instance")
        try:
            (worker,) = server.worker_pids()
            print(
                json.dumps(run(server.url, worker, args.requests, args.files, png, args.seconds)),
                flush=True,
            )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
