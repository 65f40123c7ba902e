"""Which runtime serves the bundled model (issue 36): speed and an accuracy guard.

    python benchmarks/runtime_choice.py [--split val] [--limit N] [--out FILE]

For Keras/TensorFlow (the reference), OpenVINO f32 and, where the CPU has bf16
instructions, OpenVINO bf16: the forward pass of one film as served (flip TTA: one batch
of two at the network's input size), the median of 20 after a warm-up; then the whole
validation split through the same predictor, scored as ``pneumo evaluate`` scores it.
The guard, against Keras: pooled and within-source AUC within 0.005, positive-image Dice
within 0.01, and no verdict that differs at any operating point. Prints JSON (and writes
it to ``--out``); the fastest runtime that passes the guard is named as the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GUARD = {"auc": 0.005, "dice": 0.01, "flips": 0}


def _cpu_has(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _forward_ms(predictor, x) -> float:
    runtime = predictor.runtime
    pair = np.concatenate([x, x[:, :, ::-1]])  # flip TTA as served: one batch of two
    runtime.predict(pair)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        runtime.predict(pair)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 1)


def _scored(predictor, arrays) -> dict:
    from pneumo.evaluation.scoring import score_outputs
    from pneumo.inference import postprocess
    from pneumo.inference.predictor import image_probability
    from pneumo.evaluation import metrics

    t0 = time.perf_counter()
    out = predictor.output(arrays.x)
    seconds = time.perf_counter() - t0
    card = predictor.card
    scores = score_outputs(card, out, arrays)
    prob = image_probability(card, out)
    verdicts = {
        name: (prob >= point.threshold).tolist() for name, point in card.operating_points.items()
    }
    dices = []
    point = predictor.operating_point
    for m, y, p in zip(out.maps, arrays.y, prob):
        if y.any():
            region = postprocess.mask_from_map(m, card.postprocess)
            mask = region if p >= point.threshold else np.zeros_like(region)
            dices.append(metrics.dice(y.astype(bool), mask))
    return {
        "seconds": round(seconds, 1),
        "films_per_s": round(len(arrays.x) / seconds, 2),
        "auc": round(scores["auc"], 4),
        "auc_by_source": {
            k: round(v["auc"], 4)
            for k, v in scores["auc_by_source"].items()
            if v["auc"] is not None
        },
        # as the card measures it (scoring.score_outputs), and over every positive film
        # with a mask at the operating point (missed films count 0)
        "dice_positive_mask": round(scores["dice_positive_mask"], 4),
        "dice_positive": round(float(np.mean(dices)), 4) if dices else None,
        "verdicts": verdicts,
        "probability": prob.tolist(),
    }


def samples_by_split(dcfg, table, name: str) -> list:
    """The labelled samples of one split of the committed split file."""
    from pneumo.data import dataset

    _, samples = dcfg.samples(table)
    split = dataset.read_split(dcfg.split)
    return [s for s in samples if split.get(s.image_id) == name]


def _int8_candidate(model_dir, dcfg, table, tune):
    """OpenVINO int8: the f32 network quantised after training by NNCF (``pip install
    nncf``; not a serving requirement), calibrated on the tune split's films as served
    (each with its flip); ``None`` (and a line saying so) where NNCF is not installed."""
    try:
        import nncf
    except ImportError:
        print("openvino-int8: skipped (pip install nncf to measure it)", file=sys.stderr)
        return None
    import openvino as ov

    from pneumo.evaluation.scoring import decode_examples
    from pneumo.inference import runtime as runtimes
    from pneumo.inference.card import WEIGHTS
    from pneumo.inference.predictor import Predictor
    from pneumo.inference.preprocess import model_input

    predictor = Predictor.load(model_dir, runtime="openvino")  # keeps the f32 network
    kept = runtimes.cached_network(runtimes.weights_key(Path(model_dir) / WEIGHTS))
    network = ov.Core().read_model(str(kept))
    films = decode_examples(tune, table, predictor.pcfg, None).x
    inputs = [model_input(films[i : i + 1], predictor.pcfg) for i in range(len(films))]
    inputs += [x[:, :, ::-1].copy() for x in inputs]  # the flips the served pass sees
    quantised = nncf.quantize(network, nncf.Dataset(inputs), subset_size=len(inputs))
    predictor.runtime = runtimes.OpenVINORuntime(
        quantised, predictor.runtime.output_names, "f32", None
    )
    predictor.runtime.name = predictor.runtime.name.replace("(f32)", "(int8, NNCF)")
    return predictor


def main() -> int:
    from pneumo.data import dataset
    from pneumo.data.datacfg import DataConfig
    from pneumo.evaluation.scoring import decode_examples
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR, Predictor
    from pneumo.inference.preprocess import model_input
    from pneumo.inference.runtime import OpenVINORuntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--data", default=str(ROOT / "configs" / "data_siim_v2.json"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out")
    parser.add_argument(
        "--write-card",
        action="store_true",
        help="record the choice and its figures as the card's `serving` entry",
    )
    args = parser.parse_args()

    dcfg = DataConfig.load(args.data)
    table = dcfg.table()
    _, samples = dcfg.samples(table)
    split = dataset.read_split(dcfg.split)
    samples = [s for s in samples if split.get(s.image_id) == args.split][: args.limit]
    reference = Predictor.load(args.model, runtime="keras")  # by name: "auto" is the card's choice
    arrays = decode_examples(samples, table, reference.pcfg, None)
    x = model_input(arrays.x[:1], reference.pcfg)

    candidates = [("keras", reference)]
    openvino = Predictor.load(args.model, runtime="openvino")
    candidates.append(("openvino-f32", openvino))
    if _cpu_has("avx512_bf16") or _cpu_has("amx_bf16"):
        bf16 = Predictor.load(args.model, runtime="openvino")
        bf16.runtime = OpenVINORuntime.from_model(bf16.model, "bf16")
        candidates.append(("openvino-bf16", bf16))

    int8 = _int8_candidate(args.model, dcfg, table, samples_by_split(dcfg, table, "tune"))
    if int8 is not None:
        candidates.append(("openvino-int8", int8))

    report = {"films": len(samples), "split": args.split, "model": reference.name, "guard": GUARD}
    runs = {}
    for name, predictor in candidates:
        run = _scored(predictor, arrays)
        run["forward_tta_ms"] = _forward_ms(predictor, x)
        run["runtime"] = predictor.runtime.name
        runs[name] = run
        print(name, run["forward_tta_ms"], "ms", run["auc"], file=sys.stderr, flush=True)
    ref = runs["keras"]
    for run in runs.values():
        flips = sum(
            a != b
            for point in ref["verdicts"]
            for a, b in zip(ref["verdicts"][point], run["verdicts"][point])
        )
        dp = max(abs(a - b) for a, b in zip(ref["probability"], run["probability"]))
        worst_auc = max(
            [abs(run["auc"] - ref["auc"])]
            + [abs(run["auc_by_source"][k] - v) for k, v in ref["auc_by_source"].items()]
        )
        dice = max(
            abs((run["dice_positive"] or 0) - (ref["dice_positive"] or 0)),
            abs(run["dice_positive_mask"] - ref["dice_positive_mask"]),
        )
        run["against_keras"] = {
            "worst_auc_difference": round(worst_auc, 4),
            "dice_difference": round(dice, 4),
            "verdict_flips": flips,
            "max_probability_difference": float(f"{dp:.2g}"),
            "passes_guard": worst_auc <= GUARD["auc"] and dice <= GUARD["dice"] and flips == 0,
        }
    passing = [n for n, r in runs.items() if r["against_keras"]["passes_guard"]]
    report["choice"] = min(passing, key=lambda n: runs[n]["forward_tta_ms"])
    for run in runs.values():
        del run["verdicts"], run["probability"]
    report["runtimes"] = runs
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.write_card:
        write_serving(Path(args.model), report)
    return 0


def write_serving(model_dir: Path, report: dict) -> None:
    """The card's ``serving`` entry (what ``PNEUMO_RUNTIME=auto`` follows) from a report."""
    from pneumo.inference.card import read_card

    runtime, _, precision = report["choice"].partition("-")
    measured = {}
    for name, run in report["runtimes"].items():
        against = run["against_keras"]
        measured[name] = {
            "forward_tta_ms": run["forward_tta_ms"],
            "validation_films_per_s": run.get("films_per_s"),
            "auc": round(run["auc"], 4),
            "auc_siim": round(run["auc_by_source"].get("siim", float("nan")), 4),
            "dice_positive_mask": round(run["dice_positive_mask"], 4),
            "verdict_flips": against["verdict_flips"],
            "max_probability_difference": against["max_probability_difference"],
            "passes_guard": against["passes_guard"],
        }
    card = read_card(model_dir)
    card.serving = {
        "runtime": runtime,
        "precision": precision or "f32",
        "chosen_by": f"benchmarks/runtime_choice.py on the {report['split']} split "
        f"({report['films']} films), {time.strftime('%Y-%m-%d')}: the fastest runtime whose "
        "figures stay within the guard of Keras",
        "guard": {"auc": GUARD["auc"], "dice": GUARD["dice"], "verdict_flips": GUARD["flips"]},
        "measured": measured,
    }
    card.write(model_dir)


if __name__ == "__main__":
    raise SystemExit(main())
