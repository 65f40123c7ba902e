#!/usr/bin/env python3
"""Inference runtimes against each other, for the default model.

    .venv/bin/python benchmarks/alt_backends.py [--model DIR] [--repeats 15] [--out FILE]

Loads the model through ``pneumo.inference.runtime`` under every runtime (Keras with its
backend, and OpenVINO fp32 when the ``openvino`` extra is installed), checks that
they give the same mask probabilities and head outputs on real validation images
(largest absolute difference; the bound is 1e-4) and times a forward pass at batch
1 and 4 (median and range). Writes ``benchmarks/results/alt_backends.json``. A
runtime that is not installed is reported as such, not silently skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from run import timed, write_report  # noqa: E402  (benchmarks/run.py, beside this script)


def validation_inputs(pcfg, n: int = 8) -> np.ndarray:
    """``n`` real validation images as the network sees them (the one model-input path)."""
    from pneumo.data.examples import load_example
    from pneumo.inference.preprocess import model_input
    from pneumo.training.config import TrainConfig
    from pneumo.training.data import split_samples

    data = split_samples(TrainConfig(data=str(ROOT / "configs" / "data_siim_v2.json")))
    images = np.stack([load_example(s, data.table, pcfg)[0] for s in data.samples["val"][:n]])
    return model_input(images, pcfg)


def main() -> int:
    from pneumo.inference import runtime as runtimes
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR, Predictor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "alt_backends.json"))
    args = p.parse_args()

    predictor = Predictor.load(args.model)
    x8 = validation_inputs(predictor.pcfg)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": predictor.name,
        "input_size": predictor.pcfg.size,
        "cores": os.cpu_count(),
        "runtimes": {},
    }
    reference = predictor.runtime.predict(x8)
    for name in runtimes.RUNTIMES:
        try:
            started = time.perf_counter()
            rt = runtimes.load(name, predictor.model)
            load_s = time.perf_counter() - started
        except ValueError as exc:
            report["runtimes"][name] = {"status": str(exc)}
            continue
        maps, head, _ = rt.predict(x8)
        row = {
            "runtime": rt.name,
            "load_s": round(load_s, 2),
            "max_abs_diff_maps": float(np.abs(maps - reference[0]).max()),
        }
        if head is not None:
            row["max_abs_diff_head"] = float(np.abs(head - reference[1]).max())
        row["within_1e-4"] = max(row["max_abs_diff_maps"], row.get("max_abs_diff_head", 0)) <= 1e-4
        for batch in (1, 4):
            row[f"batch{batch}_s"] = timed(
                lambda xb=x8[:batch], rt=rt: rt.predict(xb), args.repeats
            )
        report["runtimes"][name] = row
    keras_row = report["runtimes"]["keras"]
    for row in report["runtimes"].values():
        if "batch1_s" in row:
            for batch in (1, 4):
                row[f"speed_up_batch{batch}"] = (
                    keras_row[f"batch{batch}_s"]["median"] / row[f"batch{batch}_s"]["median"]
                )
    write_report(report, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
