"""The figures of a model card, and the evaluation of a model folder on labelled images.

:func:`score_outputs` and :func:`bootstrap_intervals` turn one split's network output
into the card's figures; :func:`evaluate` predicts labelled images and writes the
reports; :func:`stats` describes a labelled data set.
"""

from __future__ import annotations

import csv
import json
import sys
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from pneumo.data import dataset
from pneumo.data.examples import decode_examples
from pneumo.evaluation import metrics
from pneumo.inference import calibration, overlay, postprocess
from pneumo.inference.card import ModelCard
from pneumo.inference.predictor import ModelOutput, Predictor, image_probability
from pneumo.io import rle


def score_outputs(card: ModelCard, out: ModelOutput, arrays) -> dict:
    """Every figure of a model card for one split's network output.

    Args:
        card: thresholds, calibration and operating points.
        out: the network output for the split's images.
        arrays: the split's ``Arrays`` (uint8 masks, labels, which masks are truth).

    Returns:
        ``auc`` and ``ece`` of the displayed probability over all labelled
        images; ``dice_positive_mask`` (mean Dice of the outlined region on
        positive images with a mask, no gate); and per operating point the
        sensitivity, specificity and SIIM scores with the gate applied
        (``operating_points``). The default point's figures are repeated at the
        top level.
    """
    prob = image_probability(card, out)
    labels = np.asarray(arrays.label, bool)
    m = np.asarray(arrays.has_mask, bool)
    regions = [postprocess.mask_from_map(p, card.postprocess) for p in out.maps]
    truths = [y > 0 for y in arrays.y]
    rel = calibration.reliability(prob, labels)
    pos_masked = np.flatnonzero(labels & m)
    result = {
        "n_images": int(len(labels)),
        "n_positive": int(labels.sum()),
        "n_negative": int((~labels).sum()),
        "n_label_only": int((~m).sum()),
        "auc": metrics.roc_auc(labels, prob),
        "ece": rel.ece,
        "brier": float(np.mean((prob - labels) ** 2)) if len(labels) else float("nan"),
        "dice_positive_mask": float(
            np.mean([metrics.dice(truths[i], regions[i]) for i in pos_masked])
        )
        if len(pos_masked)
        else float("nan"),
        "reliability": asdict(rel),
        "operating_points": {},
        "auc_by_source": auc_by_source(prob, labels, getattr(arrays, "source", None)),
        "by_source": by_source(card, prob, labels, getattr(arrays, "source", None)),
    }
    for name, point in card.operating_points.items():
        called = prob >= point.threshold
        preds = [r if c else np.zeros_like(r) for r, c in zip(regions, called)]
        seg = metrics.summarise(
            [truths[i] for i in np.flatnonzero(m)], [preds[i] for i in np.flatnonzero(m)]
        )
        sens, spec = metrics.sensitivity_specificity(labels, called)
        result["operating_points"][name] = json_safe(
            {
                "threshold": point.threshold,
                "sensitivity": sens,
                "specificity": spec,
                "dice_positive": seg["dice_positive"],
                "empty_accuracy": seg["empty_accuracy"],
                "siim_score": seg["siim_score"],
                "siim_score_reweighted": seg["siim_score_reweighted"],
            }
        )
    result.update(result["operating_points"].get(card.default_operating_point, {}))
    result.pop("threshold", None)
    return json_safe(result)


def bootstrap_intervals(
    card: ModelCard, out: ModelOutput, arrays, n: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Percentile bootstrap intervals of the card's headline figures.

    Images are resampled with replacement ``n`` times (per source and class, so every
    resample keeps the split's positives and negatives of each source); each figure is
    recomputed on the resample from per-image quantities computed once.

    Returns:
        ``{figure: [low, high]}`` for ``auc``, ``ece``, ``dice_positive_mask``
        and, per operating point, ``<point>.sensitivity``, ``.specificity``,
        ``.dice_positive`` and ``.siim_score_reweighted``.
    """
    prob = image_probability(card, out)
    labels = np.asarray(arrays.label, bool)
    m = np.asarray(arrays.has_mask, bool)
    truths = [y > 0 for y in arrays.y]
    regions = [postprocess.mask_from_map(p, card.postprocess) for p in out.maps]
    dice_region = np.array([metrics.dice(t, r) for t, r in zip(truths, regions)])
    empty_region = np.array([not r.any() for r in regions])
    source = getattr(arrays, "source", None)
    source = np.asarray(source) if source is not None else np.full(len(labels), "all")
    # resampled within each source and class, so every resample keeps the split's make-up
    strata = [
        np.flatnonzero((source == s) & (labels == c))
        for s in sorted(set(source.tolist()))
        for c in (True, False)
    ]
    strata = [g for g in strata if len(g)]
    sources = sorted(set(source.tolist())) if len(set(source.tolist())) > 1 else []
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        draws.setdefault(name, []).append(value)

    for _ in range(n):
        idx = np.concatenate([rng.choice(g, len(g)) for g in strata])
        y, p = labels[idx], prob[idx]
        for name in sources:
            inside = source[idx] == name
            ys, ps = y[inside], p[inside]
            if ys.any() and (~ys).any():
                add(f"{name}.auc", metrics.roc_auc(ys, ps))
            for op, point in card.operating_points.items():
                if ys.any():
                    add(f"{name}.{op}.sensitivity", float((ps[ys] >= point.threshold).mean()))
                if (~ys).any():
                    add(f"{name}.{op}.specificity", float((ps[~ys] < point.threshold).mean()))
        add("auc", metrics.roc_auc(y, p))
        add("ece", calibration.reliability(p, y).ece)
        pm = idx[labels[idx] & m[idx]]
        add("dice_positive_mask", float(dice_region[pm].mean()) if len(pm) else np.nan)
        for name, point in card.operating_points.items():
            called = p >= point.threshold
            sens, spec = metrics.sensitivity_specificity(y, called)
            add(f"{name}.sensitivity", sens)
            add(f"{name}.specificity", spec)
            # SIIM per-image score with the gate: a called image scores its region's Dice
            # (an empty region on a negative scores 1), an uncalled one 1 if negative, else 0
            mi = idx[m[idx]]
            c = prob[mi] >= point.threshold
            per = np.where(c, dice_region[mi], (~labels[mi]).astype(float))
            pos_s = per[labels[mi]]
            add(f"{name}.dice_positive", float(pos_s.mean()) if len(pos_s) else np.nan)
            neg_s = np.where(c, empty_region[mi], True)[~labels[mi]].astype(float)
            if len(pos_s) and len(neg_s):
                add(
                    f"{name}.siim_score_reweighted",
                    metrics.REAL_PREVALENCE * pos_s.mean()
                    + (1 - metrics.REAL_PREVALENCE) * neg_s.mean(),
                )
    tail = (1 - level) / 2 * 100
    return {
        k: [
            round(float(np.nanpercentile(v, tail)), 4),
            round(float(np.nanpercentile(v, 100 - tail)), 4),
        ]
        for k, v in draws.items()
        if np.isfinite(v).any()
    }


def by_source(
    card: ModelCard, prob: np.ndarray, labels: np.ndarray, source: np.ndarray | None
) -> dict:
    """The headline figures within each data source: AUC (where it has both classes) and,
    per operating point, sensitivity and specificity (where it has that class).

    Pooled figures can be earned by telling the sources apart (here most positives are
    SIIM films and most negatives NIH films); these cannot.
    """
    out = auc_by_source(prob, labels, source)
    for name, entry in out.items():
        sel = source == name
        y, p = labels[sel], prob[sel]
        points = {}
        for op, point in card.operating_points.items():
            called = p >= point.threshold
            points[op] = {
                "sensitivity": float(called[y].mean()) if y.any() else None,
                "specificity": float((~called[~y]).mean()) if (~y).any() else None,
            }
        entry["operating_points"] = points
    return out


def auc_by_source(prob: np.ndarray, labels: np.ndarray, source: np.ndarray | None) -> dict:
    """Image-level AUC within each data source that has both classes.

    A shortcut check: most positives here are SIIM images and most negatives NIH
    images, so a model can score a high overall AUC by recognising the source. The
    AUC within one source cannot be earned that way.
    """
    if source is None:
        return {}
    out = {}
    for name in sorted(set(source.tolist())):
        sel = source == name
        n_pos, n_neg = int(labels[sel].sum()), int((~labels[sel]).sum())
        out[name] = {
            "auc": metrics.roc_auc(labels[sel], prob[sel]) if n_pos and n_neg else None,
            "n_positive": n_pos,
            "n_negative": n_neg,
        }
    return out


def evaluate(
    predictor: Predictor,
    samples: list[dataset.Sample],
    table: dict,
    out_dir: str | Path,
    progress: bool = True,
) -> dict:
    """Predict every sample, compute all metrics at the model size, write reports.

    Writes ``metrics.json``, ``per_image.csv``, ``roc.png``, ``dice_hist.png``
    and ``worst_cases.png`` into ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = decode_examples(samples, table, predictor.pcfg, "evaluating" if progress else None)
    xs, ys = arrays.x, arrays.y
    model_out = predictor.output(xs)
    card = predictor.card
    scores = score_outputs(card, model_out, arrays)
    if predictor.gate is not None and model_out.features is not None:
        # chest films the chest gate would refuse (the gate's false rejections)
        scores["gate_rejections"] = int((~predictor.gate.passes(model_out.features)).sum())
    prob = image_probability(card, model_out)
    rows = []
    for s, p, y, pr in zip(samples, model_out.maps, ys, prob):
        region = postprocess.mask_from_map(p, card.postprocess)
        called = pr >= predictor.operating_point.threshold
        mask = region if called else np.zeros_like(region)
        rows.append(
            {
                "ImageId": s.image_id,
                "label": int(bool(s.positive)),
                "truth_area": int(y.sum()),
                "pred_area": int(mask.sum()),
                "dice": metrics.dice(y.astype(bool), mask),
                card.probability_kind: round(float(pr), 4),
            }
        )
    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["ImageId"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "metrics.json").write_text(json.dumps(scores, indent=2))
    _plots(out, rows, xs, ys, model_out.maps, predictor, prob)
    return scores


def json_safe(d: dict) -> dict:
    """Replace NaN (undefined metrics) by ``None`` so the JSON is standard."""
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}


def _plots(out: Path, rows, xs, ys, maps, predictor, prob) -> None:
    try:
        import matplotlib  # lazy: the train extra's plotting library, absent from serving
    except ImportError:  # the serving image has no plotting library (the train extra has)
        print("note: matplotlib is not installed; plots skipped", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    if not rows:
        return
    labels = np.array([r["label"] > 0 for r in rows])
    scores = np.asarray(prob)
    fpr, tpr = metrics.roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "k:")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"ROC, AUC {metrics.roc_auc(labels, scores):.3f}")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist([r["dice"] for r in rows if r["truth_area"] > 0], bins=20, range=(0, 1))
    ax.set_xlabel("Dice (positive images)")
    ax.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(out / "dice_hist.png", dpi=80)
    plt.close(fig)
    worst = np.argsort([r["dice"] for r in rows])[:8]
    tiles = []
    for i in worst:
        mask = (
            postprocess.mask_from_map(maps[i], predictor.pp)
            if prob[i] >= predictor.operating_point.threshold
            else np.zeros(maps[i].shape, bool)
        )
        pred = overlay.filled(xs[i], mask)
        truth = overlay.contour(xs[i], ys[i].astype(bool), 1, (0, 255, 0))
        tiles.append(overlay.side_by_side(truth, pred, gap=2))
    grid = np.concatenate(tiles, axis=0)
    Image.fromarray(grid).save(out / "worst_cases.png")


def stats(samples: list[dataset.Sample], table: dict, out_dir: str | Path | None = None) -> dict:
    """Exploratory statistics: counts, mask areas, view position, sex and age."""
    areas, views, sexes, ages = [], Counter(), Counter(), []
    multi = 0
    for s in samples:
        if s.image_id in table:
            multi += len(table[s.image_id]) > 1
            if s.positive:
                areas.append(int(rle.merge(table[s.image_id]).sum()))
        if s.format == "DICOM":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(s.path, stop_before_pixels=True)
                views[str(ds.get("ViewPosition", "?"))] += 1
                sexes[str(ds.get("PatientSex", "?"))] += 1
                age = str(ds.get("PatientAge", "")).rstrip("Y")
                if age.isdigit():
                    ages.append(int(age))
    result = {
        "images": len(samples),
        "positive": sum(1 for s in samples if s.positive),
        "negative": sum(1 for s in samples if s.positive is False),
        "multi_annotation_images": multi,
        "mask_area_px_1024": _quantiles(areas),
        "dicom_view_position": dict(views),
        "dicom_sex": dict(sexes),
        "dicom_age": _quantiles(ages),
        "by_source": dict(Counter(s.source for s in samples)),
    }
    if out_dir:
        _stats_plots(Path(out_dir), areas, views)
    return result


def _quantiles(values: list[int]) -> dict:
    if not values:
        return {}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {
        "n": len(values),
        "min": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "max": float(q[4]),
    }


def _stats_plots(out: Path, areas, views) -> None:
    import matplotlib  # lazy: the train extra's plotting library, absent from serving

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    if areas:
        ax.hist(np.array(areas) / 1024**2 * 100, bins=30)
    ax.set_xlabel("mask area (% of image)")
    ax.set_ylabel("positive images")
    fig.tight_layout()
    fig.savefig(out / "mask_area.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(list(views), list(views.values()))
    ax.set_ylabel("DICOM images")
    ax.set_title("View position")
    fig.tight_layout()
    fig.savefig(out / "view_position.png", dpi=80)
    plt.close(fig)
