#!/usr/bin/env python3
"""Training speed (images/s) of the model-v2 pilot candidates and the U-Net baseline.

    .venv/bin/python benchmarks/train_speed.py [--steps 6] [--out FILE]

Builds each config in configs/pilot/ (and configs/train_unet_256.json) with its
precision policy; random data, batch 8, after 2 warm-up steps, median of per-step
times; loss on every named output as in training. Run it on an idle machine.
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


def measure(cfg_path: Path, steps: int, batch: int = 8) -> dict:
    import keras
    import numpy as np
    from pneumo.nets import losses
    from pneumo.nets.networks import IMAGE_OUTPUT, build_model
    from pneumo.training.config import TrainConfig
    from pneumo.training.loop import precision_policy

    cfg = TrainConfig.load(cfg_path)
    policy = precision_policy(cfg, gpu=False)
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(cfg.architecture)
    names = list(model.output_names)
    loss = {n: (losses.image_bce if n == IMAGE_OUTPUT else losses.weighted_bce_dice) for n in names}
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=loss if len(names) > 1 else losses.weighted_bce_dice,
    )
    size, channels = cfg.preprocess["size"], cfg.preprocess.get("channels", 1)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, channels)).astype("float32")
    y = (rng.random((batch, size, size, 1)) > 0.98).astype("float32")
    target = {n: (np.ones((batch, 1), "float32") if n == IMAGE_OUTPUT else y) for n in names}
    target = target if len(names) > 1 else y
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        model.train_on_batch(x, target)
        if i >= 2:
            times.append(time.perf_counter() - t)
    keras.mixed_precision.set_global_policy("float32")
    step = statistics.median(times)
    return {
        "config": cfg_path.name,
        "architecture": cfg.architecture["name"],
        "encoder": cfg.architecture["args"].get("encoder", "-"),
        "size": size,
        "precision": policy,
        "batch": batch,
        "params": model.count_params(),
        "step_s": step,
        "images_per_s": batch / step,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_speed.json"))
    args = p.parse_args()
    configs = sorted((ROOT / "configs" / "pilot").glob("*.json")) + [
        ROOT / "configs" / "train_unet_256.json"
    ]
    rows = [measure(c, args.steps) for c in configs]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "rows": rows},
            indent=2,
        )
    )
    for r in rows:
        print(
            f"{r['config']:22s} {r['encoder']:18s} {r['size']}² {r['precision']:15s} "
            f"{r['params']:>10,} params  {r['images_per_s']:6.2f} images/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
