"""Render a model folder's human-readable card (README.md) from its model.json."""
from __future__ import annotations

import json
from pathlib import Path

LIMITATIONS = """\
- Trained on a small public subset (about 600 positive SIIM training images) on a 2-core CPU,
  from scratch: no ImageNet pretraining was available offline. Expect missed small or
  apical pneumothoraces and false positives on tubes, skin folds and scapular edges.
- Few negatives come from SIIM itself; most negatives are NIH ChestX-ray14 images
  (512 x 512 PNG re-encodings) whose labels are text-mined, so some may be wrong.
- Many SIIM training images are lossy JPEG re-encodings (amarshrma) of the DICOM pixels.
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


def render(model_dir: str | Path, command: str | None = None) -> str:
    """Markdown model card for ``model_dir``."""
    model_dir = Path(model_dir)
    card = json.loads((model_dir / "model.json").read_text())
    arch, pre, pp = card["architecture"], card["preprocess"], card["postprocess"]
    val, data, train = card.get("validation", {}), card.get("data", {}), card.get("training", {})
    cfg = card.get("config", {})
    weights = model_dir / "weights.weights.h5"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    params = card.get("parameters")
    lines = [
        f"# Model card: {card['name']}",
        "",
        "**Intended use**: decision support for pneumothorax on adult frontal (PA/AP) chest",
        "radiographs: it highlights a suspected pneumothorax for a radiologist or emergency",
        "physician to check. **It is not a diagnosis** and must not be used to rule a",
        "pneumothorax out.",
        "",
        "## Architecture",
        f"- `{arch['name']}` with arguments `{json.dumps(arch.get('args', {}))}`"
        + (f", {params:,} parameters" if params else ""),
        f"- weights file `weights.weights.h5`: {size_mb:.1f} MB (Keras 3, loads under any backend)",
        "",
        "## Input and preprocessing",
        f"- grey image resized to {pre['size']} x {pre['size']} (`{pre.get('resize')}`), values "
        f"{pre.get('scale')}, {pre['channels']} channel(s); DICOM windowing and MONOCHROME1",
        "  inversion by `pneumo.imaging.read_image`, then `pneumo.preprocess.preprocess` (shared",
        "  by training, evaluation and serving).",
        f"- test-time augmentation (horizontal flip): {'on' if card.get('tta') else 'off'}",
        "",
        "## Post-processing (tuned on the validation split by grid search)",
        f"- objective: SIIM score at {pp.get('tuned_for_prevalence', 0.22):.0%} prevalence"
        " (at the real 22 % an almost silent model scores best, which helps no reader)",
        f"- image is positive when at least {pp['min_top_pixels']} pixels (at {pp['reference_size']}²)"
        f" exceed {pp['top_threshold']}: the image-level probability shown is that",
        f"  {pp['min_top_pixels']}-th highest pixel probability, the operating threshold {pp['top_threshold']}",
        f"- mask = pixels above {pp['pixel_threshold']}, components under {pp['min_area']} pixels removed",
        "",
        "## Training data",
        f"- sources: {', '.join(data.get('sources', []))} (see `../shared/data/*/SOURCES.md`)",
        f"- split file `splits/{data.get('split_file')}` (fixed before training; SIIM by ImageId,"
        " NIH by patient; no pixel-identical image across splits)",
        f"- training images: {data.get('train_images')} ({data.get('train_positive')} positive);"
        f" validation images: {data.get('val_images')} ({data.get('val_positive')} positive)",
        "",
        "## Training procedure",
        f"- loss `{cfg.get('loss')}`, deep supervision weights {cfg.get('deep_supervision')},"
        f" Adam lr {cfg.get('learning_rate')} ({cfg.get('lr_schedule')}), batch {cfg.get('batch_size')},"
        f" {cfg.get('steps_per_epoch')} steps per epoch, positives drawn at {cfg.get('positive_fraction')}",
        f"- augmentation: {json.dumps(cfg.get('augment', {}))}",
        f"- epochs run: {train.get('epochs_run')} (best epoch {train.get('best_epoch')}),"
        f" {train.get('seconds')} s on {'a GPU' if train.get('gpu') else 'the CPU'}"
        f" ({train.get('backend')} backend), {train.get('train_images_per_second')} training images/s",
        f"- seed {cfg.get('seed')}",
        *([f"- warm start: began from `{cfg['init_weights']}` (a previous run's weights, same"
           " architecture) with a fresh learning-rate schedule"] if cfg.get("init_weights") else []),
        "",
        "## Validation results (held-out split, model input resolution)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| SIIM score (mean per-image Dice, this split's prevalence) | {_fmt(val.get('siim_score'))} |",
        f"| SIIM score re-weighted to 22 % prevalence | {_fmt(val.get('siim_score_reweighted'))} |",
        f"| mean Dice on positive images | {_fmt(val.get('dice_positive'))} |",
        f"| empty-image accuracy | {_fmt(val.get('empty_accuracy'))} |",
        f"| image-level AUC | {_fmt(val.get('auc'))} |",
        f"| sensitivity / specificity at the operating point | {_fmt(val.get('sensitivity'))} / {_fmt(val.get('specificity'))} |",
        f"| images (positive / negative) | {val.get('n_images')} ({val.get('n_positive')} / {val.get('n_negative')}) |",
        "",
        "## Known limitations",
        LIMITATIONS,
        "",
        "## Reproduce",
        "```bash",
        command or f"pneumo train --config configs/<config>.json --out models/{card['name']}",
        "pneumo evaluate --model models/" + card["name"],
        "```",
        "",
    ]
    return "\n".join(lines)
