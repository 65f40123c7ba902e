"""A corpus of mutated real files through the API and STOW while colleagues read
(Hardening III).

    python benchmarks/mutation_corpus.py [--files 2000] [--seed 34] [--model models/NAME]
        [--out benchmarks/results/mutation_corpus.json]

Starts the app (one worker, 4 threads, as `scripts/run.sh`) with one team: an uploader
sends --files mutated copies of real SIIM and pydicom files (the mutations of
`tests/fuzz_cases.py`: truncations, bit flips, inserted and zeroed bytes, duplicated
runs, DICOM header edits, nested and long sequences, declared dimensions), alternately
through `POST /api/v1/predictions` and STOW-RS, while two radiologists read a stored
result (each view an audit write). Prints and writes one JSON object: status codes per
entry point, server errors (target 0) with their mutation, the readers' status codes,
the seconds taken.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the gunicorn harness and the mutations live there

from helpers.fuzz_cases import KINDS, mutate, seed_files  # noqa: E402
from helpers.localserver import Colleagues, LocalServer, multipart_file, stow_body  # noqa: E402
from pneumo.paths import default_model_dir  # noqa: E402


def corpus(n: int, seed: int) -> list[tuple[str, str, bytes]]:
    """``n`` mutated files: ``(seed file name, mutation, bytes)``, the same for a seed."""
    seeds = seed_files()
    names = sorted(seeds)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        name, kind = names[rng.integers(len(names))], KINDS[rng.integers(len(KINDS))]
        blob = rng.bytes(int(rng.integers(0, 64)))
        out.append(
            (
                name,
                kind,
                mutate(
                    seeds[name], name, kind, float(rng.random()), int(rng.integers(0, 10_000)), blob
                ),
            )
        )
    return out


def send(url: str, token: str, data: bytes, stow: bool) -> int:
    """One file through the API or STOW; the HTTP status."""
    if stow:
        body, ctype = stow_body(data)
        target = url + "/dicomweb/studies"
    else:
        body, ctype = multipart_file(data, "file")
        target = url + "/api/v1/predictions"
    req = urllib.request.Request(
        target, data=body, headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--seed", type=int, default=34)
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mutation_corpus.json"))
    args = p.parse_args(argv)
    from app.store.repository import Store

    files = corpus(args.files, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        store = Store(data)
        store.init()
        tokens = {}
        for name, role in (("up", "uploader"), ("r1", "radiologist"), ("r2", "radiologist")):
            store.accounts.create(name, "a-long-password-1", "A", role)
            tokens[name] = store.accounts.create_token(name)
        store.close()
        server = LocalServer(
            args.model,
            Path(tmp) / "instance",
            env={"PNEUMO_DATA_DIR": str(data), "PNEUMO_UPLOAD_RATE_LIMIT": "100000 per minute"},
        )
        seeds = seed_files()
        try:
            body, ctype = multipart_file(seeds["siim.dcm"], "seed.dcm")
            req = urllib.request.Request(
                server.url + "/api/v1/predictions",
                data=body,
                headers={"Content-Type": ctype, "Authorization": f"Bearer {tokens['up']}"},
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                rid = json.loads(resp.read())["results"][0]["id"]
            started = time.perf_counter()
            codes = {"api": collections.Counter(), "stow": collections.Counter()}
            errors = []
            with Colleagues(
                server.url,
                [tokens["r1"], tokens["r2"]],
                [f"/api/v1/predictions/{rid}", f"/results/{rid}"],
            ) as readers:
                for i, (name, kind, blob) in enumerate(files):
                    stow = i % 2 == 1
                    code = send(server.url, tokens["up"], blob, stow)
                    codes["stow" if stow else "api"][code] += 1
                    if code >= 500 and code != 503:
                        errors.append(
                            {
                                "file": name,
                                "mutation": kind,
                                "via": "stow" if stow else "api",
                                "status": code,
                            }
                        )
            seconds = time.perf_counter() - started
        finally:
            server.stop()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "files": len(files),
        "seed": args.seed,
        "model": Path(args.model).name,
        "seconds": round(seconds, 1),
        "status": {k: dict(sorted(v.items())) for k, v in codes.items()},
        "server_errors": len(errors),
        "errors": errors[:50],
        "reader_status": {str(k): v for k, v in readers.statuses.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
