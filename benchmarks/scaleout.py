#!/usr/bin/env python3
"""Scale-out figures: upload latency on PostgreSQL against the SQLite file, and the
throughput of two app nodes against one, on this machine.

    .venv/bin/python benchmarks/scaleout.py [--model DIR] [--uploads 30] [--burst 40]

Starts everything itself on loopback (a PostgreSQL cluster from Debian's packages,
gunicorn nodes with one worker each) and stops it. Writes
``benchmarks/results/scaleout.json`` and prints it.

* ``upload_p50_ms``: sequential uploads of distinct real SIIM DICOMs to one node, on
  the SQLite file and on PostgreSQL (target: PostgreSQL no more than 10 % slower);
* ``throughput``: a burst of concurrent uploads sent to one node, then spread over two
  nodes sharing PostgreSQL and a blob folder; uploads per second and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import loadtest  # noqa: E402
from helpers import pgserver  # noqa: E402
from helpers.localserver import LocalServer  # noqa: E402


def _env(database_url: str | None, blob: Path | None) -> dict:
    env = {
        "PNEUMO_UPLOAD_RATE_LIMIT": "100000 per minute",
        "PNEUMO_LOG_LEVEL": "WARNING",
        "PNEUMO_SECRET_KEY": "b" * 32,
        "PNEUMO_DUPLICATES": "keep",  # the same films again: analysed each time, not linked
    }
    if database_url:
        env["PNEUMO_DATABASE_URL"] = database_url
    if blob:
        env["PNEUMO_BLOB_URL"] = str(blob)
    return env


def sequential_p50(node: LocalServer, images: list[Path]) -> float:
    """Median wall time of one upload (ms), one after another, after one warm-up."""
    client = loadtest.Client(node.url)
    client.upload(images[0])
    times = []
    for image in images[1:]:
        t0 = time.perf_counter()
        client.upload(image)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def burst(urls: list[str], images: list[Path]) -> float:
    """Uploads per second of all ``images`` sent at once, spread over ``urls``."""
    clients = [loadtest.Client(urls[i % len(urls)]) for i in range(len(images))]
    errors: list[str] = []

    def one(i: int):
        try:
            clients[i].upload(images[i])
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} uploads failed: {errors[:3]}")
    return len(images) / wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from pneumo.paths import default_model_dir

    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--uploads", type=int, default=30, help="sequential uploads per database")
    p.add_argument("--burst", type=int, default=40, help="concurrent uploads per set-up")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaleout.json"))
    args = p.parse_args()
    images = [
        i for i in loadtest.pick_images(max(args.uploads, args.burst) + 20) if i.suffix == ".dcm"
    ]
    work = Path(tempfile.mkdtemp(prefix="pneumo-scaleout-"))
    pg = pgserver.PostgresServer().start()
    report: dict = {"model": Path(args.model).name, "cores": os.cpu_count()}
    try:
        p50 = {}
        for name, url in (("sqlite", None), ("postgresql", pg.new_database())):
            node = LocalServer(args.model, work / f"seq-{name}", env=_env(url, None))
            try:
                p50[name] = round(sequential_p50(node, images[: args.uploads + 1]), 1)
            finally:
                node.stop()
        report["upload_p50_ms"] = p50
        report["postgresql_vs_sqlite"] = round(p50["postgresql"] / p50["sqlite"], 3)

        url, blob = pg.new_database(), work / "blob"
        nodes = [LocalServer(args.model, work / f"node-{i}", env=_env(url, blob)) for i in range(2)]
        try:
            burst([nodes[0].url], images[:4])  # warm both
            burst([nodes[1].url], images[:4])
            one = burst([nodes[0].url], images[: args.burst])
            two = burst([n.url for n in nodes], images[: args.burst])
        finally:
            for n in nodes:
                n.stop()
        report["throughput_uploads_per_s"] = {"one_node": round(one, 2), "two_nodes": round(two, 2)}
        report["two_vs_one"] = round(two / one, 2)
    finally:
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
