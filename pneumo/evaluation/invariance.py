"""Encoding invariance: does the verdict depend on the chest or on the file?

Each labelled image is decoded once, written again in every encoding of
:mod:`pneumo.io.encodings` (plus its ``original`` file), read back through the
upload reader and predicted. Per encoding the report gives the card's
figures (AUC, calibration error, sensitivity/specificity at each operating
point, positive-image Dice at model size), the positive-image Dice of the
outlined region at the file's own resolution, and, against the original
file, the verdict flips at each operating point and the change of the
displayed probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pneumo.data import dataset
from pneumo.evaluation.metrics import dice
from pneumo.evaluation.scoring import json_safe, score_outputs
from pneumo.inference.predictor import ModelOutput, Predictor, image_probability
from pneumo.inference.preprocess import model_image, resize_target_mask
from pneumo.io import encodings, rle
from pneumo.io.imaging import ImageRecord, read_image
from pneumo.progress import track

ALL = ("original",) + encodings.ENCODINGS


@dataclass
class _Labels:
    """The minimal ``Arrays`` that :func:`score_outputs` reads."""

    y: np.ndarray
    label: np.ndarray
    has_mask: np.ndarray
    source: np.ndarray


def record_as(sample: dataset.Sample, encoding: str) -> ImageRecord:
    """``sample`` stored as ``encoding`` and read back as an upload would be."""
    if encoding == "original":
        return read_image(sample.path)
    data, _ = encodings.encode(read_image(sample.path).pixels, encoding)
    return read_image(data)


def _truth(sample: dataset.Sample, table: dict, shape: tuple[int, int]) -> np.ndarray:
    """The ground-truth mask at ``shape`` (all zero for negatives and label-only positives)."""
    if not (sample.positive and sample.has_mask and sample.image_id in table):
        return np.zeros(shape, bool)
    full = rle.merge(table[sample.image_id])
    if full.shape == shape:
        return full.astype(bool)
    m = cv2.resize(full.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return m > 0.5


def predict_encoding(
    predictor: Predictor,
    samples: list[dataset.Sample],
    table: dict,
    encoding: str,
    batch_size: int = 8,
    progress: bool = False,
) -> dict:
    """Predict every sample stored as ``encoding``.

    Returns ``{"probability": (N,), "scores": card figures, "dice_full": mean
    positive-image Dice at the file's resolution}``.
    """
    size = predictor.pcfg.size
    n = len(samples)
    small = np.zeros((n, size, size), np.uint8)
    truth_small = np.zeros_like(small)
    maps, heads, dice_full = [], [], []
    starts = range(0, n, batch_size)
    if progress:
        starts = track(starts, f"{encoding}", unit="batch")
    for start in starts:
        chunk = samples[start : start + batch_size]
        records = [record_as(s, encoding) for s in chunk]
        batch = np.stack([model_image(r.pixels, predictor.pcfg) for r in records])
        small[start : start + len(chunk)] = batch
        out = predictor.output(batch)
        maps.append(out.maps)
        if out.head is not None:
            heads.append(out.head)
        for i, (s, rec) in enumerate(zip(chunk, records)):
            if not s.positive:
                continue
            truth = _truth(s, table, rec.pixels.shape)  # decoded once for both sizes
            truth_small[start + i] = resize_target_mask(truth, size)
            if s.has_mask and s.image_id in table:
                dice_full.append(dice(truth, predictor.finish(rec, out, i).mask))
    model_out = ModelOutput(np.concatenate(maps), np.concatenate(heads) if heads else None)
    labels = _Labels(
        truth_small,
        np.array([bool(s.positive) for s in samples]),
        np.array([s.has_mask for s in samples]),
        np.array([s.source for s in samples], dtype=str),
    )
    return {
        "probability": image_probability(predictor.card, model_out),
        "scores": score_outputs(predictor.card, model_out, labels),
        "dice_full": float(np.mean(dice_full)) if dice_full else float("nan"),
    }


def count_by_source(flags: np.ndarray, sources: np.ndarray) -> dict[str, int]:
    """How many of ``flags`` (bool, one per film) are set within each source."""
    return {str(src): int(flags[sources == src].sum()) for src in sorted(set(sources.tolist()))}


def invariance_report(
    predictor: Predictor,
    samples: list[dataset.Sample],
    table: dict,
    names: tuple[str, ...] = ALL,
    progress: bool = True,
) -> dict:
    """Every encoding's figures and its flips against ``original`` (which must come first)."""
    if not names or names[0] != "original":
        raise ValueError("the encodings must start with 'original', the reference")
    points = predictor.card.operating_points
    sources = np.array([s.source for s in samples], dtype=str)
    ref = None
    report = {"n_images": len(samples), "model": predictor.name, "encodings": {}}
    for name in names:
        res = predict_encoding(predictor, samples, table, name, progress=progress)
        prob = res["probability"]
        if ref is None:
            ref = prob
        s = res["scores"]
        delta = np.abs(prob - ref)
        row = {
            "auc": s["auc"],
            "ece": s["ece"],
            "dice_positive_mask": s["dice_positive_mask"],
            "dice_positive_full_size": res["dice_full"],
            "median_abs_dp": float(np.median(delta)),
            "p95_abs_dp": float(np.percentile(delta, 95)),
            "max_abs_dp": float(delta.max()),
            "auc_by_source": s.get("auc_by_source", {}),
            "by_source": s.get("by_source", {}),
            "operating_points": {},
        }
        for pname, point in points.items():
            flips = (prob >= point.threshold) != (ref >= point.threshold)
            op = s["operating_points"][pname]
            row["operating_points"][pname] = {
                "sensitivity": op["sensitivity"],
                "specificity": op["specificity"],
                "siim_score_reweighted": op.get("siim_score_reweighted"),
                "flips": int(flips.sum()),
                "flip_rate": float(flips.mean()),
                "flips_by_source": count_by_source(flips, sources),
            }
        report["encodings"][name] = json_safe(row)
    worst = report["encodings"]
    base_auc = worst["original"]["auc"]
    report["summary"] = {
        "max_flip_rate": max(
            op["flip_rate"] for r in worst.values() for op in r["operating_points"].values()
        ),
        "max_median_abs_dp": max(r["median_abs_dp"] for r in worst.values()),
        "max_auc_drop": max(
            base_auc - (r["auc"] if r["auc"] is not None else 0) for r in worst.values()
        ),
        "worst_auc": min(r["auc"] for r in worst.values() if r["auc"] is not None),
    }
    return report


def markdown(report: dict) -> str:
    """The per-encoding table for the model card and benchmarks/README.md."""
    names = list(next(iter(report["encodings"].values()))["operating_points"])
    first = next(iter(report["encodings"].values()))
    sources = sorted(first.get("by_source", {}))
    head = [
        "encoding",
        "AUC",
        *[f"{src.upper()} AUC" for src in sources],
        "ECE",
        "Dice+ (model size)",
        "Dice+ (full size)",
        "median abs dp",
        "p95 abs dp",
    ]
    for n in names:
        head += [
            f"{n} sens/spec",
            *[f"{n} {src.upper()} sens/spec" for src in sources],
            f"{n} flips" + (f" ({'/'.join(s.upper() for s in sources)})" if sources else ""),
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    for enc, r in report["encodings"].items():
        per = r.get("by_source", {})
        cells = [
            enc,
            f(r["auc"]),
            *[f(per.get(src, {}).get("auc")) for src in sources],
            f(r["ece"]),
            f(r["dice_positive_mask"]),
            f(r["dice_positive_full_size"]),
            f(r["median_abs_dp"]),
            f(r["p95_abs_dp"]),
        ]
        for n in names:
            op = r["operating_points"][n]
            cells.append(f"{f(op['sensitivity'], '{:.2f}')}/{f(op['specificity'], '{:.2f}')}")
            for src in sources:
                o = per.get(src, {}).get("operating_points", {}).get(n, {})
                cells.append(
                    f"{f(o.get('sensitivity'), '{:.2f}')}/{f(o.get('specificity'), '{:.2f}')}"
                )
            by = op.get("flips_by_source", {})
            cells.append(
                f"{op['flips']} ({100 * op['flip_rate']:.1f} %)"
                + (f" ({'/'.join(str(by.get(src, 0)) for src in sources)})" if sources else "")
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{report['n_images']} images; model {report['model']}.\n"
