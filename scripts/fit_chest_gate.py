"""Fit a model's chest gate (the card's ``chest_gate``) and report how it does.

    .venv/bin/python scripts/fit_chest_gate.py [--model models/NAME]
        [--report benchmarks/results/chest_gate.json]

Chest films: the training and tune splits of the data config (the
validation split is only scored). Non-chest images: the ``fit`` part of
:mod:`pneumo.training.gate_data`, each also rotated by 90 degrees and
cropped, so the gate sees more than one pose of each. Features: the model's
own pooled deep features, with the card's test-time augmentation, exactly as
the Predictor computes them. The report gives the gate's false rejections on
every validation chest film and its catch rate on the held-out non-chest
images (appearance alone, and with the header and colour checks).
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
from pneumo.data.datacfg import DataConfig  # noqa: E402
from pneumo.data.dataset import read_split  # noqa: E402
from pneumo.inference import gate  # noqa: E402
from pneumo.inference.card import WEIGHTS, read_card  # noqa: E402
from pneumo.inference.predictor import predict_batches  # noqa: E402
from pneumo.inference.preprocess import model_image  # noqa: E402
from pneumo.io.imaging import read_image  # noqa: E402
from pneumo.nets import networks  # noqa: E402
from pneumo.progress import track  # noqa: E402
from pneumo.training.gate_data import non_chest_examples  # noqa: E402


def chest_films(split_names: set[str], data: str | Path) -> list[np.ndarray]:
    """Display pixels of every sample in the named splits."""
    dcfg = DataConfig.load(data)
    _, samples = dcfg.samples(dcfg.table())
    split = read_split(dcfg.split)
    chosen = [s for s in samples if split.get(s.image_id) in split_names]
    return [read_image(s.path).pixels for s in track(chosen, f"reading {len(chosen)} films")]


def poses(pixels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The image, rotated by 90 degrees, and a random crop of at least half its side."""
    h, w = pixels.shape
    ch, cw = max(2, int(h * rng.uniform(0.5, 0.9))), max(2, int(w * rng.uniform(0.5, 0.9)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return [pixels, np.ascontiguousarray(np.rot90(pixels)), pixels[y : y + ch, x : x + cw]]


class Features:
    """The model's pooled features for display pixels, as the Predictor computes them."""

    def __init__(self, model_dir: Path):
        self.card = read_card(model_dir)
        model = networks.build_model(self.card.architecture)
        model.load_weights(model_dir / WEIGHTS)
        self.model = networks.with_features(model)

    def __call__(self, images: list[np.ndarray], label: str) -> np.ndarray:
        out = []
        for i in track(range(0, len(images), 16), f"features of {label}", unit="batch"):
            batch = np.stack([model_image(p, self.card.preprocess) for p in images[i : i + 16]])
            out.append(
                predict_batches(self.model, batch, self.card.preprocess, tta=self.card.tta).features
            )
        return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(paths.default_model_dir()))
    p.add_argument("--data", default=str(ROOT / "configs" / "data_siim_v2.json"))
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "chest_gate.json"))
    args = p.parse_args(argv)
    model_dir = Path(args.model)
    rng = np.random.default_rng(7)
    feats = Features(model_dir)
    chest = feats(chest_films({"train", "tune"}, args.data), "training and tune chest films")
    fit_other = [q for e in non_chest_examples("fit") for q in poses(e.record.pixels, rng)]
    fitted = gate.fit(chest, feats(fit_other, "non-chest images (fit part)"))
    val = feats(chest_films({"val"}, args.data), "validation chest films")
    held = non_chest_examples("held_out")
    held_pass = fitted.passes(feats([e.record.pixels for e in held], "held-out non-chest"))
    by_header = np.array([gate.metadata_reason(e.record.meta) is not None for e in held])

    def refused(kind: str) -> int:
        """Held-out films of ``kind`` refused by the appearance gate or by their header."""
        pairs = zip(held, held_pass, by_header)
        return sum(1 for e, ok, h in pairs if e.kind == kind and (not ok or h))

    val_scores = fitted.scores(val)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "model": model_dir.name,
        "threshold": round(fitted.threshold, 4),
        **fitted.info,
        "validation_chest_films": len(val),
        "validation_false_rejections": int((val_scores < fitted.threshold).sum()),
        "validation_lowest_score": round(float(val_scores.min()), 4),
        "held_out_non_chest": len(held),
        "held_out_caught_by_appearance": int((~held_pass).sum()),
        "held_out_caught_in_all": int((~held_pass | by_header).sum()),
        "held_out_missed": [
            f"{e.kind}:{e.name}" for e, ok, h in zip(held, held_pass, by_header) if ok and not h
        ],
        "held_out_by_kind": {  # refused by the gate or by the header
            k: f"{refused(k)}/{sum(1 for e in held if e.kind == k)}"
            for k in sorted({e.kind for e in held})
        },
    }
    card = feats.card
    card.chest_gate = dict(
        fitted.to_dict(), report={k: v for k, v in report.items() if k not in ("held_out_missed",)}
    )
    card.write(model_dir)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
