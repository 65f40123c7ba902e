#!/usr/bin/env python3
"""The model-v2 pilot as a Markdown table, from each run's log, state and config.

    .venv/bin/python scripts/pilot_table.py [runs/pilot] > models/NAME/pilot.md

Every candidate trained for the same wall-clock budget (its config's max_seconds) on
split_v2's training part, scored after each epoch on the tune split (never on
validation). Rows: the last epoch's tune AUC (image head, or the mask evidence
without a head) and raw positive-image Dice (pixel threshold 0.5, no gate), the
best epoch by their mean, images seen and the training images/s of the run.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows(pilot_dir: Path) -> list[dict]:
    out = []
    for state_path in sorted(pilot_dir.glob("*/state.json")):
        run = state_path.parent
        cfg = json.loads((ROOT / "configs" / "pilot" / f"{run.name}.json").read_text())
        state = json.loads(state_path.read_text())
        with open(run / "log.csv", newline="") as fh:
            log = list(csv.DictReader(fh))
        args = cfg["architecture"]["args"]
        last = log[-1]
        best = max(log, key=lambda r: float(r["tune_key"]))
        out.append(
            {
                "candidate": run.name,
                "encoder": (
                    f"{args.get('encoder', 'vgg19')}"
                    f"{' (ImageNet)' if cfg.get('encoder_weights') else ' (scratch)'}"
                ),
                "input": f"{args['input_size']}²",
                "precision": cfg.get("precision", "float32"),
                "epochs": state["epoch"],
                "images": state["epoch"] * cfg["steps_per_epoch"] * cfg["batch_size"],
                "seconds": state["seconds"],
                "images_per_s": state.get("images_per_second"),
                "auc": float(last["tune_auc"]),
                "dice": float(last["tune_dice_positive_raw"]),
                "best_epoch": int(best["epoch"]) + 1,
                "best_auc": float(best["tune_auc"]),
                "best_dice": float(best["tune_dice_positive_raw"]),
            }
        )
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| candidate | first encoder | input | precision | epochs | images seen | wall-clock s "
        "| images/s | tune AUC (last) | tune raw positive Dice (last) | best epoch: AUC / Dice |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['candidate']} | {r['encoder']} | {r['input']} | {r['precision']} | "
            f"{r['epochs']} | {r['images']} | {r['seconds']:.0f} | {r['images_per_s']} | "
            f"{r['auc']:.3f} | {r['dice']:.3f} | {r['best_epoch']}: "
            f"{r['best_auc']:.3f} / {r['best_dice']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "pilot"
    print(markdown(rows(folder)))
