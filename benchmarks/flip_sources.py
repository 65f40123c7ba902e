"""Where verdict flips under a size or encoding change come from: the canonical JPEG step.

    .venv/bin/python benchmarks/flip_sources.py [--model models/NAME] [--split tune]
        [--encodings jpeg75,jpeg95,upscale2x,downscale2x] [--max-images N]
        [--out benchmarks/results/flip_sources.json]

Each film of the split is stored again in every encoding (:mod:`pneumo.io.encodings`),
read back as an upload and brought to the working resolution; then it reaches the
network three ways:

- ``served``: the card's path (:func:`pneumo.inference.preprocess.model_image`): the
  canonical JPEG round trip at the working resolution, then the model size;
- ``no_jpeg``: the same without the canonical JPEG step;
- ``jpeg_4_offsets``: the canonical JPEG step done four times, with the 8 x 8 block grid
  moved by 0 or 4 px down and across, and the four results averaged (one forward pass;
  ``"jpeg_offsets": 4`` in a card's preprocessing, :func:`pneumo.inference.preprocess.canonical`).

Against each mode's reading of the original file, the JSON and the Markdown table give the
median and 95th percentile of |change of the shown probability| and the verdict flips at
each operating point, by source. The card's calibration and thresholds are used unchanged
in every mode, so for a model trained and fitted on the served path the other two modes are
diagnostics, not candidates: they show how much of a change's effect passes through the JPEG
step. (For a card that already averages offsets, ``served`` and ``jpeg_4_offsets`` coincide.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoding_invariance import split_samples  # noqa: E402
from pneumo import paths  # noqa: E402
from pneumo.evaluation.invariance import count_by_source, record_as  # noqa: E402
from pneumo.evaluation.metrics import roc_auc  # noqa: E402
from pneumo.evaluation.scoring import auc_by_source, json_safe  # noqa: E402
from pneumo.inference.predictor import Predictor, image_probability  # noqa: E402
from pneumo.inference.preprocess import (  # noqa: E402
    PreprocessConfig,
    canonical,
    model_image,
    resize_image,
    to_working,
)
from pneumo.progress import track  # noqa: E402

MODES = ("served", "no_jpeg", "jpeg_4_offsets")


def mode_image(working: np.ndarray, mode: str, pcfg: PreprocessConfig) -> np.ndarray:
    """A working-resolution film to the model-size ``uint8`` image of ``mode``."""
    if mode == "served":
        return model_image(working, pcfg)
    if mode == "no_jpeg" or pcfg.jpeg_quality is None:
        return resize_image(working, pcfg.size)
    return resize_image(canonical(working, pcfg.jpeg_quality, 4), pcfg.size)


def readings(predictor: Predictor, samples: list, encodings: list[str]) -> dict:
    """``{encoding: {mode: (N,) shown probability}}`` with ``original`` first."""
    pcfg = predictor.pcfg
    out = {e: {m: [] for m in MODES} for e in ["original"] + encodings}
    for s in track(samples, "films", unit="film"):
        for e in out:
            working = to_working(record_as(s, e).pixels, pcfg.working_size)
            batch = np.stack([mode_image(working, m, pcfg) for m in MODES])
            prob = image_probability(predictor.card, predictor.output(batch))
            for m, p in zip(MODES, prob):
                out[e][m].append(float(p))
    return {e: {m: np.array(v) for m, v in ms.items()} for e, ms in out.items()}


def summarise(predictor: Predictor, samples: list, read: dict) -> dict:
    """Figures per mode and encoding, by source (see the module docstring)."""
    labels = np.array([bool(s.positive) for s in samples])
    source = np.array([s.source for s in samples])
    points = {n: p.threshold for n, p in predictor.card.operating_points.items()}
    report = {}
    for m in MODES:
        base = read["original"][m]
        row = json_safe(
            {
                "auc": roc_auc(labels, base),
                "auc_by_source": auc_by_source(base, labels, source),
                "encodings": {},
            }
        )
        for e, by_mode in read.items():
            if e == "original":
                continue
            p = by_mode[m]
            dp = np.abs(p - base)
            row["encodings"][e] = {
                "median_abs_dp": float(np.median(dp)),
                "p95_abs_dp": float(np.percentile(dp, 95)),
                "flips": {
                    name: count_by_source((p >= t) != (base >= t), source)
                    for name, t in points.items()
                },
            }
        report[m] = row
    return report


def markdown(report: dict, n: int) -> str:
    lines = [
        f"| mode | AUC of the original (pooled / by source) | encoding | median / p95 |Δp| "
        f"| flips by operating point (by source), of {n} films |",
        "|---|---|---|---|---|",
    ]
    for m, row in report.items():
        auc = " / ".join(
            f"{k} {'–' if v is None else f'{v:.3f}'}"
            for k, v in [
                ("pooled", row["auc"]),
                *((src, by["auc"]) for src, by in row["auc_by_source"].items()),
            ]
        )
        for i, (e, f) in enumerate(row["encodings"].items()):
            flips = "; ".join(
                f"{name} {sum(by.values())} (" + "/".join(f"{k} {v}" for k, v in by.items()) + ")"
                for name, by in f["flips"].items()
            )
            lines.append(
                f"| {m if i == 0 else ''} | {auc if i == 0 else ''} | {e} | "
                f"{f['median_abs_dp']:.4f} / {f['p95_abs_dp']:.3f} | {flips} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(paths.default_model_dir()))
    p.add_argument("--data", default=str(ROOT / "configs" / "data_siim_v2.json"))
    p.add_argument("--split", default="tune", choices=["train", "tune", "val"])
    p.add_argument("--max-images", type=int)
    p.add_argument("--encodings", default="jpeg75,jpeg95,upscale2x,downscale2x")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flip_sources.json"))
    args = p.parse_args(argv)
    encodings = [e.strip() for e in args.encodings.split(",") if e.strip() and e != "original"]
    predictor = Predictor.load(args.model)
    samples, _ = split_samples(args.data, args.split, args.max_images)
    started = time.time()
    report = summarise(predictor, samples, readings(predictor, samples, encodings))
    result = {
        "model": predictor.name,
        "split": args.split,
        "n_images": len(samples),
        "modes": report,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.time() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(report, len(samples)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
