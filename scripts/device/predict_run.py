#!/usr/bin/env python3
"""The model's outputs for some image files under the current Keras backend, and
optionally ``pneumo predict``'s speed, as JSON (used by the device check and the
cross-backend tests).

    KERAS_BACKEND=torch python scripts/device/predict_run.py FILE_OR_FOLDER... \\
        --device cpu --out run.json [--maps maps.npz] [--bench 1,16] [--model DIR]

The model is loaded as everywhere else (``pneumo.inference.loading.load_predictor``)
and the files read as ``pneumo predict`` reads them (``pneumo.inference.reads``).
Writes: where the model was placed and where its weights actually are, the model and a
digest of its weights, the seconds to place and load it (with the warm-up), each
file's image-level probability at full precision (or, for a file the reader or the
chest gate refuses, ``null`` and the reason), with ``--maps`` the probability maps
(float32, N x size x size, in the order of ``files``; NaN for a refused file), with
``--bench`` images/s of ``pneumo.evaluation.batch.predict_files`` (what
``pneumo predict`` runs) at each batch size after one warm-up pass, and the
allocator's peak GPU memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def weights_digest(model_dir: Path) -> str:
    """sha256 of the model folder's weights file: which weights a reference belongs to."""
    from pneumo.inference.card import WEIGHTS

    return hashlib.sha256((Path(model_dir) / WEIGHTS).read_bytes()).hexdigest()


def outputs(predictor, files: list[Path], batch: int = 16):
    """(reads, maps) for ``files`` as ``pneumo predict`` reads them, ``batch`` at a time:
    one read per file, and the probability maps (NaN where a file was refused)."""
    import numpy as np
    from pneumo.inference.reads import file_items, read_items

    reads = list(read_items(predictor, file_items(files), batch))
    size = predictor.pcfg.size
    maps = np.stack(
        [
            r.prediction.probability_map if r.ok else np.full((size, size), np.nan, np.float32)
            for r in reads
        ]
    )
    return reads, maps


def bench(predictor, files: list[Path], batch_sizes: list[int], min_s: float) -> dict:
    """images/s of predict_files at each batch size: one warm-up pass (traces the
    batch shapes), then whole passes until ``min_s`` seconds have been timed."""
    from pneumo.evaluation.batch import predict_files

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        sub, scores = Path(tmp) / "sub.csv", Path(tmp) / "scores.csv"
        for bs in batch_sizes:
            predict_files(predictor, files, sub, scores, batch_size=bs, progress=False)
            images, elapsed, passes = 0, 0.0, 0
            while elapsed < min_s or passes == 0:
                t0 = time.perf_counter()
                counts = predict_files(predictor, files, sub, scores, batch_size=bs, progress=False)
                elapsed += time.perf_counter() - t0
                images += counts["images"]
                passes += 1
            result[f"batch{bs}"] = {
                "images_per_s": round(images / elapsed, 2),
                "images": images,
                "passes": passes,
                "seconds": round(elapsed, 3),
            }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="DICOM/PNG/JPEG files or folders")
    p.add_argument("--device", default="auto", help="auto, cpu or gpu (as PNEUMO_DEVICE)")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--maps", help="npz file for the probability maps")
    p.add_argument("--bench", help="batch sizes to time, e.g. 1,16")
    p.add_argument("--bench-min-s", dest="bench_min_s", type=float, default=2.0)
    p.add_argument(
        "--runtime",
        default="keras",
        help="keras (default: this script compares the Keras backends), openvino or auto",
    )
    args = p.parse_args(argv)

    from pneumo.inference.device import gpu_memory_peak, weights_device
    from pneumo.inference.loading import ModelOptions, load_predictor
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR

    options = ModelOptions(
        Path(args.model or DEFAULT_MODEL_DIR).resolve(), device=args.device, runtime=args.runtime
    )
    t0 = time.perf_counter()
    predictor = load_predictor(options)
    load_s = time.perf_counter() - t0
    from pneumo.data.dataset import iter_image_files

    files = iter_image_files(args.inputs)
    reads, maps = outputs(predictor, files)
    ids = [r.image_id or f.stem for r, f in zip(reads, files)]
    report = {
        "backend": predictor.backend,
        "device": predictor.device,
        "weights_device": weights_device(predictor.model),
        "model": predictor.name,
        "model_dir": str(options.model_dir),
        "weights_sha256": weights_digest(options.model_dir),
        "load_and_warm_up_s": round(load_s, 3),
        "tta": bool(predictor.tta),
        "files": [
            {"file": f.name, "image_id": i, "probability": r.probability}
            | ({} if r.ok else {"error": r.error})
            for f, i, r in zip(files, ids, reads)
        ],
    }
    if args.maps:
        import numpy as np

        np.savez_compressed(args.maps, maps=maps, image_ids=np.array(ids))
    if args.bench:
        sizes = [int(b) for b in args.bench.split(",")]
        report["predict_files"] = bench(predictor, files, sizes, args.bench_min_s)
    report["gpu_memory_peak"] = gpu_memory_peak()
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{predictor.device}: {len(files)} files, load and warm-up {load_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
