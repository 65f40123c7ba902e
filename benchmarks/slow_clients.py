"""Slow clients against the service, with and without nginx in front (Hardening II item 1).

    python benchmarks/slow_clients.py [--seconds 30] [--clients 50]

Starts the app with the bundled model twice, as `scripts/run.sh` serves it (gunicorn
alone) and as the Docker image serves it (PNEUMO_PROXY=1: nginx in front), opens
``--clients`` connections that trickle their headers or bodies (tests/localserver.py
SlowClients), probes /healthz every 0.5 s and uploads one SIIM DICOM halfway through.
Prints one JSON line per set-up: /healthz latencies (s; 5.0 = no answer within 5 s),
the upload's status and seconds, how often the server dropped a slow connection.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the gunicorn harness lives with the tests

from helpers.localserver import LocalServer, SlowClients, multipart_file, probe_latencies  # noqa: E402
from pneumo.paths import default_model_dir  # noqa: E402


def upload(url: str, data: bytes, result: dict) -> None:
    body, ctype = multipart_file(data, "a.dcm")
    req = urllib.request.Request(
        url + "/api/v1/predictions", data=body, headers={"Content-Type": ctype}
    )
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            result["status"] = resp.status
    except urllib.error.HTTPError as exc:
        result["status"] = exc.code
    except OSError as exc:
        result["status"] = f"no answer ({type(exc).__name__})"
    result["seconds"] = round(time.perf_counter() - t, 2)


def attack(proxy: bool, seconds: float, clients: int, dicom: bytes) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalServer(default_model_dir(), Path(tmp) / "instance", proxy=proxy)
        try:
            up: dict = {}
            with SlowClients(server.port, n=clients, bodies=clients // 5) as slow:
                timer = threading.Timer(seconds / 2, upload, (server.url, dicom, up))
                timer.start()
                lat = probe_latencies(server.url + "/healthz", seconds)
                timer.join(70)
            return {
                "setup": "nginx + gunicorn" if proxy else "gunicorn alone",
                "clients": clients,
                "seconds": seconds,
                "healthz_max_s": round(max(lat), 3),
                "healthz_median_s": round(statistics.median(lat), 3),
                "healthz_no_answer": sum(x >= 5.0 for x in lat),
                "probes": len(lat),
                "upload": up,
                "dropped_slow_connections": slow.reconnects,
            }
        finally:
            server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args()
    dicom = sorted((ROOT.parent / "shared" / "data" / "siim").rglob("*.dcm"))[0].read_bytes()
    for proxy in (False, True):
        print(json.dumps(attack(proxy, args.seconds, args.clients, dicom)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
