"""Re-read throughput: the ray engine on a local Ray vs the single-process `pneumo predict`.

    .venv/bin/python benchmarks/reread.py [--model models/NAME] [--images 100]
        [--repeats 2] [--batch-size 4] [--cores-per-actor 2] [--address ADDR]
        [--out benchmarks/results/reread.json]

Both engines run `pneumo predict`'s path (:func:`pneumo.evaluation.batch.predict_files`:
files read as bytes, the upload reader, the model, a submission and a scores CSV) on the
same class-stratified validation films of the committed split, alternately (local, ray,
local, ray, ...) so a neighbour's load falls on both. Per run: images/s once the model is
loaded (the steady state; ``on_ready`` marks the moment: the local Predictor loaded, or
every Ray actor's) and end to end (from the call: model load, Ray start and stop
included). The JSON keeps every run and the medians; the ray engine's submission must
equal the local one byte for byte. Target (issue 22): ray >= 0.9x local images/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoding_invariance import split_samples  # noqa: E402
from pneumo import paths  # noqa: E402
from pneumo.evaluation.batch import predict_files  # noqa: E402
from pneumo.evaluation.ray_engine import machine_cores  # noqa: E402
from pneumo.inference.loading import ModelOptions  # noqa: E402


def one_run(engine: str, model: str, files: list[str], out: Path, args) -> dict:
    """One `pneumo predict` run with ``engine``: seconds, images/s and where it ran."""
    ready: dict = {}

    def on_ready(where: str) -> None:
        ready.update(where=where, at=time.perf_counter())

    extra = (
        {"address": args.address, "cores_per_actor": args.cores_per_actor}
        if engine == "ray"
        else {}
    )
    started = time.perf_counter()
    counts = predict_files(
        ModelOptions(model, device="cpu"),
        files,
        out / f"{engine}.csv",
        out / f"{engine}_scores.csv",
        batch_size=args.batch_size,
        progress=False,
        engine=engine,
        on_ready=on_ready,
        **extra,
    )
    ended = time.perf_counter()
    n = counts["images"] + counts["failed"] + counts["not_chest"]
    return {
        "engine": engine,
        "where": ready["where"],
        "images": n,
        "start_s": round(ready["at"] - started, 2),
        "read_s": round(ended - ready["at"], 2),
        "images_per_s": round(n / (ended - ready["at"]), 3),
        "end_to_end_images_per_s": round(n / (ended - started), 3),
        "skipped": counts["skipped"],
    }


def summary(runs: list[dict], engine: str) -> dict:
    mine = [r for r in runs if r["engine"] == engine]
    return {
        key: round(statistics.median(r[key] for r in mine), 3)
        for key in ("images_per_s", "end_to_end_images_per_s", "start_s", "read_s")
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(paths.default_model_dir()))
    p.add_argument("--data", default=str(ROOT / "configs" / "data_siim_v2.json"))
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument("--cores-per-actor", dest="cores_per_actor", type=int, default=2)
    p.add_argument("--address", help="an existing Ray cluster (default: a local Ray)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reread.json"))
    args = p.parse_args(argv)
    import ray  # lazy: ray is an optional extra

    samples, _ = split_samples(args.data, "val", args.images)
    files = [s.path for s in samples]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for repeat in range(args.repeats):
            for engine in ("local", "ray"):
                runs.append(dict(one_run(engine, args.model, files, out, args), repeat=repeat))
                print(json.dumps(runs[-1]), flush=True)
        same = (out / "local.csv").read_bytes() == (out / "ray.csv").read_bytes() and (
            out / "local_scores.csv"
        ).read_bytes() == (out / "ray_scores.csv").read_bytes()
    local, on_ray = summary(runs, "local"), summary(runs, "ray")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": Path(args.model).name,
        "cores": machine_cores(),
        "ray_version": ray.__version__,
        "images": len(files),
        "formats": {
            f: sum(s.format == f for s in samples) for f in sorted({s.format for s in samples})
        },
        "batch_size": args.batch_size,
        "cores_per_actor": args.cores_per_actor,
        "address": args.address or "local Ray",
        "local": local,
        "ray": on_ray,
        "ratio_images_per_s": round(on_ray["images_per_s"] / local["images_per_s"], 3),
        "ratio_end_to_end": round(
            on_ray["end_to_end_images_per_s"] / local["end_to_end_images_per_s"], 3
        ),
        "same_submission_and_scores": same,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "local",
                    "ray",
                    "ratio_images_per_s",
                    "ratio_end_to_end",
                    "same_submission_and_scores",
                )
            },
            indent=2,
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
