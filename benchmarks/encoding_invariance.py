"""Encoding and size invariance of a model: the same films stored every way and size.

    .venv/bin/python benchmarks/encoding_invariance.py [--model models/NAME] [--split val]
        [--max-images N] [--encodings original,png,jpeg75,...]
        [--out benchmarks/results/encoding_invariance.json]

Each image of the split is decoded, written again as lossless PNG, JPEG at
quality 95/75/50, a 2x downscaled PNG, a 2x bicubic upscale, DICOM with JPEG
Baseline and with uncompressed pixels, and 12-bit DICOM that the reader must window,
at the film's size and as a 2,500-px CR/DX-sized film (:mod:`pneumo.io.encodings`);
every version goes through the upload reader and the model. The JSON holds every
figure; the Markdown table printed at the end is the one in the model card and
benchmarks/README.md. Targets (issues 20 and 32): verdict flips <= 2 % for every
encoding and size, median |dp| <= 0.02, AUC of every encoding within 0.01 of the
original's.
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

from pneumo import paths  # noqa: E402
from pneumo.data import dataset  # noqa: E402
from pneumo.data.datacfg import DataConfig  # noqa: E402
from pneumo.evaluation import invariance  # noqa: E402
from pneumo.inference.predictor import Predictor  # noqa: E402


def split_samples(
    data: str | Path, split_name: str, max_images: int | None, seed: int = 2030
) -> tuple[list[dataset.Sample], dict]:
    """The split's samples (a fixed, class-stratified subset when ``max_images`` is set)."""
    dcfg = DataConfig.load(data)
    table = dcfg.table()
    _, samples = dcfg.samples(table)
    split = dataset.read_split(dcfg.split)
    chosen = [s for s in samples if split.get(s.image_id) == split_name]
    if max_images and len(chosen) > max_images:
        rng = np.random.default_rng(seed)
        pos = [s for s in chosen if s.positive]
        neg = [s for s in chosen if not s.positive]
        k = max_images // 2
        chosen = [pos[i] for i in sorted(rng.choice(len(pos), min(k, len(pos)), replace=False))] + [
            neg[i]
            for i in sorted(rng.choice(len(neg), min(max_images - k, len(neg)), replace=False))
        ]
    return chosen, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(paths.default_model_dir()))
    p.add_argument("--data", default=str(ROOT / "configs" / "data_siim_v2.json"))
    p.add_argument("--split", default="val", choices=["train", "tune", "val"])
    p.add_argument("--max-images", type=int)
    p.add_argument("--encodings", default=",".join(invariance.ALL))
    p.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "encoding_invariance.json")
    )
    args = p.parse_args(argv)
    names = tuple(n.strip() for n in args.encodings.split(",") if n.strip())
    predictor = Predictor.load(args.model)
    samples, table = split_samples(args.data, args.split, args.max_images)
    started = time.time()
    report = invariance.invariance_report(predictor, samples, table, names)
    report.update(
        date=time.strftime("%Y-%m-%d %H:%M"),
        split=args.split,
        seconds=round(time.time() - started, 1),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(invariance.markdown(report))
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
