#!/usr/bin/env python3
"""Training speed (images/s) of U-Net and Double-UNet at 256² and 512² on this machine.

    .venv/bin/python benchmarks/train_speed.py [--steps 10] [--out FILE]

Uses the bundled model's Double-UNet configuration (width 0.25, encoder batch
norm) and the U-Net baseline configuration; random data, batch 8, after 2
warm-up steps. Median of per-step times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(arch: dict, size: int, steps: int, batch: int = 8) -> dict:
    import keras
    import numpy as np
    from pneumo import losses
    from pneumo.networks import build_model
    arch = json.loads(json.dumps(arch))
    arch["args"]["input_size"] = size
    model = build_model(arch)
    n_out = len(model.outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=[losses.weighted_bce_dice] * n_out if n_out > 1 else losses.weighted_bce_dice)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 1)).astype("float32")
    y = (rng.random((batch, size, size, 1)) > 0.98).astype("float32")
    target = (y,) * n_out if n_out > 1 else y
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        model.train_on_batch(x, target)
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {"architecture": arch["name"], "size": size, "batch": batch,
            "params": model.count_params(), "step_s": step, "images_per_s": batch / step}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_speed.json"))
    args = p.parse_args()
    double = json.loads((ROOT / "configs/train_double_unet_256.json").read_text())["architecture"]
    unet = json.loads((ROOT / "configs/train_unet_256.json").read_text())["architecture"]
    rows = [measure(a, s, args.steps) for a in (unet, double) for s in (256, 512)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    for r in rows:
        print(f"{r['architecture']:12s} {r['size']}²  {r['params']:>9,} params  "
              f"{r['images_per_s']:6.2f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
