"""How often a model flags unlabelled SIIM films: a bound on its specificity within SIIM
where almost no labelled SIIM normal film exists (issue 32, item 8).

    .venv/bin/python benchmarks/unlabelled_flags.py [--model models/NAME] \
        [--films .cache/siim_stage2/Data/stage_2_images] \
        [--list splits/siim_stage2_heldout_v1.txt] [--prevalence 0.22] [--out FILE.json]

The films are SIIM's stage-2 test DICOMs (no public labels; scripts/siim_stage2.sh), by
default the half that self-training never pseudo-labels. Of N films with prevalence p, a
model that flags a share f at a threshold has specificity between
1 - f / (1 - p) (every positive missed) and 1 - (f - p) / (1 - p) (every positive found).
The review band's share is the share of films with a negative verdict whose probability
lies in the band (issue 32, item 4: at most one normal film in ten).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumo.inference.loading import ModelOptions, load_predictor  # noqa: E402
from pneumo.inference.postprocess import review_band  # noqa: E402
from pneumo.inference.predictor import Predictor, image_probability  # noqa: E402
from pneumo.inference.preprocess import model_image  # noqa: E402
from pneumo.io.imaging import read_image  # noqa: E402
from pneumo.progress import track  # noqa: E402


def probabilities(predictor: Predictor, files: list[Path], batch_size: int = 8) -> np.ndarray:
    """The card's calibrated image probability of every file (the card's TTA)."""
    out = []
    for start in track(range(0, len(files), batch_size), "reading films", unit="batch"):
        chunk = files[start : start + batch_size]
        batch = np.stack([model_image(read_image(f).pixels, predictor.pcfg) for f in chunk])
        out.append(image_probability(predictor.card, predictor.output(batch)))
    return np.concatenate(out)


def flag_report(predictor: Predictor, p: np.ndarray, prevalence: float) -> dict:
    """Per operating point: the share flagged and the specificity bounds it implies."""
    card = predictor.card
    report = {"films": int(len(p)), "prevalence": prevalence, "operating_points": {}}
    for name, point in sorted(card.operating_points.items(), key=lambda kv: kv[1].threshold):
        flagged = float(np.mean(p >= point.threshold))
        row = {
            "threshold": point.threshold,
            "flagged": round(flagged, 4),
            "specificity_at_least": round(max(0.0, 1 - flagged / (1 - prevalence)), 4),
            "specificity_at_most": round(
                min(1.0, 1 - (flagged - prevalence) / (1 - prevalence)), 4
            ),
        }
        band = review_band(card.operating_points, point, card.review_floor)
        if band is not None:
            row["review_band"] = [round(band[0], 4), round(band[1], 4)]
            row["in_review_band"] = round(float(np.mean((p >= band[0]) & (p < band[1]))), 4)
        report["operating_points"][name] = row
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the bundled model)")
    ap.add_argument("--films", default=str(ROOT / ".cache/siim_stage2/Data/stage_2_images"))
    ap.add_argument("--list", default=str(ROOT / "splits/siim_stage2_heldout_v1.txt"))
    ap.add_argument("--prevalence", type=float, default=0.22)
    ap.add_argument("--out", help="JSON file to write")
    args = ap.parse_args(argv)
    folder = Path(args.films)
    ids = [line.strip() for line in Path(args.list).read_text().splitlines() if line.strip()]
    files = [folder / f"{i}.dcm" for i in ids]
    missing = [f for f in files if not f.exists()]
    if missing:
        print(
            f"error: {len(missing)} films missing, e.g. {missing[0]} (run scripts/siim_stage2.sh)",
            file=sys.stderr,
        )
        return 2
    predictor = load_predictor(
        ModelOptions(model_dir=Path(args.model)) if args.model else ModelOptions()
    )
    report = flag_report(predictor, probabilities(predictor, files), args.prevalence)
    report["model"] = predictor.name
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
