"""Average runs' weights into one network and package it, scored on the tune split.

    .venv/bin/python scripts/weight_soup.py --config configs/pilot/v6_control.json \
        --out runs/v6/soup_v5_control \
        models/double_unet_lite0_384_v5/weights.weights.h5 runs/v6/control/weights.weights.h5

The runs must share the config's architecture (and, for the mean to mean anything,
one warm start). The folder written is a model folder fitted and scored on tune
only, like a pilot's; `pneumo finalize --run OUT` scores it on validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="training config of the runs")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("weights", nargs="+", help="two or more weight files")
    args = p.parse_args(argv)
    if len(args.weights) < 2:
        p.error("give at least two weight files")
    missing = [w for w in args.weights if not Path(w).is_file()]
    if missing:
        p.error(f"no such weight file: {missing[0]}")

    from pneumo.training.config import TrainConfig
    from pneumo.training.data import split_samples
    from pneumo.training.packaging import average_weights, write_model_folder

    cfg = dataclasses.replace(TrainConfig.load(args.config), report_validation=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    average_weights(cfg, args.weights, out / "weights.weights.h5")
    state = {"epoch": 0, "best_epoch": 0, "seconds": 0.0, "soup": args.weights}
    (out / "state.json").write_text(json.dumps(state, indent=2))
    card = write_model_folder(cfg, out, out, split_samples(cfg), {"soup": args.weights})
    print(json.dumps(card["tune"], indent=2, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
