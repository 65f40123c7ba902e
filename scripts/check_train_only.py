"""Check that no train-only film of a data config (pseudo-labelled, issue 32 item 8) is a
copy of a tune or validation film: the same 16x16 average hash within a Hamming distance.

    python scripts/check_train_only.py configs/data_siim_v3.json [--drop]

SIIM's films are NIH ChestX-ray14 images, so SIIM's unlabelled films can be the very NIH
films of the tune or validation split. ``--drop`` removes such copies from the train-only
label CSVs (and exits 0); without it, any copy fails the check (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys

from pneumo.data import pseudo
from pneumo.io import rle

from pneumo.data import dataset
from pneumo.data.datacfg import DataConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="data config JSON with train_only sources")
    p.add_argument("--max-hamming", type=int, default=6)
    p.add_argument("--drop", action="store_true", help="remove the copies from the label CSVs")
    args = p.parse_args(argv)
    dcfg = DataConfig.load(args.data)
    _, samples = dcfg.samples()
    split = dataset.read_split(dcfg.split)
    held_out = [s for s in samples if split.get(s.image_id) in ("tune", "val")]
    extra = dcfg.train_only_samples()
    # the held-out films play "val" and the train-only films "train" in the pair search
    roles = {s.image_id: "val" for s in held_out} | {s.image_id: "train" for s in extra}
    pairs = dataset.cross_split_pixel_duplicates(held_out + extra, roles, args.max_hamming)
    report = {
        "train_only": len(extra),
        "tune_and_validation": len(held_out),
        "copies": [{"train_only": a, "held_out": b, "split": split[b]} for a, b in pairs],
    }
    if args.drop and pairs:
        copies = {a for a, _ in pairs}
        for source in dcfg.train_only:
            kept = sorted(set(rle.read_rle_csv(source.rle_csv)) - copies)
            pseudo.write_labels(source.rle_csv, kept)
        report["dropped"] = len(copies)
    print(json.dumps(report, indent=2))
    return 1 if pairs and not args.drop else 0


if __name__ == "__main__":
    sys.exit(main())
