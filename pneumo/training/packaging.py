"""Packaging a run as a model folder: weights, tuned post-processing, calibration,
operating points, validation figures, card and plots.

Everything is fitted on the tune split; the validation split is predicted once,
at the end, for the card's figures. (A data config without a tune split, such
as split_v1, tunes on validation, and the card says so.)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from pneumo.data.examples import Arrays
from pneumo.evaluation import cardrender, metrics, operating_points
from pneumo.evaluation.scoring import bootstrap_intervals, score_outputs
from pneumo.inference import calibration, postprocess
from pneumo.inference.card import WEIGHTS, ModelCard
from pneumo.inference.device import has_gpu
from pneumo.inference.predictor import ModelOutput, predict_batches
from pneumo.inference.preprocess import PreprocessConfig
from pneumo.nets import networks
from pneumo.training.config import TrainConfig
from pneumo.training.data import (
    SplitData,
    cached_arrays,
    cached_native,
    encoded_arrays,
    split_samples,
)


def load_model_weights(model, path: str | Path) -> None:
    """Load a run's weights file into ``model``, ignoring its optimizer variables."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "skipping optimizer variables"
        model.load_weights(path)


def slim_weights(cfg: TrainConfig, path: Path) -> None:
    """Rewrite a run's weights file with the network's weights alone (no optimizer
    variables: a third of the size), as a model folder ships them."""
    model = networks.build_model(cfg.architecture)
    load_model_weights(model, path)
    model.save_weights(path)


def average_weights(cfg: TrainConfig, paths: list[str | Path], out: str | Path) -> None:
    """Write the element-wise mean of several weight files of ``cfg``'s network to
    ``out`` (a "weight soup": runs fine-tuned from one start can be averaged into one
    network that serves at the cost of one)."""
    if len(paths) < 2:
        raise ValueError("a weight soup needs at least two weight files")
    sets = []
    for path in paths:
        model = networks.build_model(cfg.architecture)
        load_init_weights(model, path)
        sets.append(model.get_weights())
    model.set_weights([np.mean(ws, axis=0).astype(ws[0].dtype) for ws in zip(*sets)])
    model.save_weights(out)


def load_init_weights(model, path: str | Path) -> None:
    """Warm start: load a previous run's weights into a freshly built model.

    The file must come from the same architecture; anything else is refused
    with a message naming the file rather than a shape error from deep inside
    Keras.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"init_weights: {path} does not exist")
    try:
        load_model_weights(model, path)
    except Exception as exc:  # noqa: BLE001 - Keras raises several types here
        raise ValueError(
            f"init_weights: {path} does not fit this architecture "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def fit_card(
    name: str,
    cfg: TrainConfig,
    pcfg: PreprocessConfig,
    tune: Arrays,
    tune_out: ModelOutput,
    fitted_on: str,
) -> ModelCard:
    """Mask thresholds, calibration and operating points from the tune split."""
    with_mask = tune.label & tune.has_mask
    base = postprocess.PostProcess(reference_size=pcfg.size)
    pp, _ = operating_points.tune_mask(
        tune_out.maps[with_mask], tune.y[with_mask], pcfg.size, base.evidence_pixels
    )
    ev = tune_out.evidence(postprocess.evidence_pixels(pp, pcfg.size))
    cal, cv_losses = calibration.choose_calibrator(tune_out.head, ev, tune.label)
    cal = calibration.Calibrator(cal.features, cal.coef, cal.intercept, fitted_on=fitted_on)
    prob = cal.probability(tune_out.head, ev)
    dice_if_pos = np.array(
        [
            metrics.dice(t > 0, postprocess.mask_from_map(m, pp))
            for m, t in zip(tune_out.maps, tune.y)
        ]
    )
    points = operating_points.choose_operating_points(prob, tune.label, dice_if_pos, tune.has_mask)
    floor = operating_points.review_floor(
        prob, tune.label, points["balanced"].threshold, tune.source
    )
    return ModelCard(
        name=name,
        architecture=cfg.architecture,
        preprocess=pcfg,
        postprocess=pp,
        operating_points=points,
        calibration=cal,
        tta=cfg.tta,
        version=time.strftime("%Y-%m-%d"),
        extra={
            "calibration_cv_log_loss": cv_losses,
            "fitted_on_encodings": list(cfg.tune_encodings),
        },
        calibration_prevalence=round(float(np.mean(tune.label)), 4),
        review_floor=floor,
    )


def pooled_tune(
    model,
    cfg: TrainConfig,
    pcfg: PreprocessConfig,
    tune: Arrays,
    samples: list,
    tune_out: ModelOutput,
) -> tuple[Arrays, ModelOutput]:
    """The tune split once per encoding of ``cfg.tune_encodings`` (original first), with
    the network's output on each: thresholds, calibration and operating points fitted on
    all of them hold whichever way a site stores its films."""
    names = [n for n in cfg.tune_encodings if n != "original"]
    if not names:
        return tune, tune_out
    if tune.native is None:
        tune.native = cached_native(samples, cfg.native_size, cfg.cache_dir, progress=False)
    xs, outs = [tune.x], [tune_out]
    for name in names:
        xs.append(encoded_arrays(tune, name, pcfg))
        outs.append(predict_batches(model, xs[-1], pcfg, tta=cfg.tta))
    k = len(xs)
    pooled = Arrays(
        np.concatenate(xs),
        np.concatenate([tune.y] * k),
        np.tile(tune.label, k),
        np.tile(tune.has_mask, k),
        None if tune.source is None else np.tile(tune.source, k),
    )
    heads = [o.head for o in outs]
    return pooled, ModelOutput(
        np.concatenate([o.maps for o in outs]), None if heads[0] is None else np.concatenate(heads)
    )


def write_model_folder(
    cfg: TrainConfig,
    run_dir: Path,
    out: Path,
    data: SplitData,
    training_info: dict,
    progress: bool = True,
) -> dict:
    """Load the run's best weights, fit post-processing on tune, measure on validation,
    and write ``out`` (weights, model.json, README.md, logs and plots)."""
    out.mkdir(parents=True, exist_ok=True)
    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    # a fresh, uncompiled float32 network: the shipped file holds weights, not optimizer state
    model = networks.build_model(cfg.architecture)
    load_model_weights(model, run_dir / "weights.weights.h5")
    model.save_weights(out / WEIGHTS)
    if run_dir != out:
        for log in run_dir.glob("log*.csv"):  # a resumed run may have several parts
            shutil.copy(log, out / log.name)
    tune_name = "tune" if data.samples["tune"] else "val"
    names = {tune_name, "val"} if cfg.report_validation else {tune_name}
    arrays = {
        name: cached_arrays(data.samples[name], data.table, pcfg, cfg.cache_dir, progress)
        for name in names
    }
    outputs = {name: predict_batches(model, arrays[name].x, pcfg, tta=cfg.tta) for name in arrays}
    fit_arrays, fit_out = pooled_tune(
        model, cfg, pcfg, arrays[tune_name], data.samples[tune_name], outputs[tune_name]
    )
    card = fit_card(out.name, cfg, pcfg, fit_arrays, fit_out, tune_name)
    card.tune = score_outputs(card, outputs[tune_name], arrays[tune_name])
    if "val" in outputs:
        card.validation = score_outputs(card, outputs["val"], arrays["val"])
        card.validation["ci95"] = bootstrap_intervals(card, outputs["val"], arrays["val"])
    card.parameters = model.count_params()
    card.data = data.info()
    card.training = training_info
    card.config = json.loads(json.dumps(cfg.__dict__))
    card.write(out)
    if "val" in outputs:
        cardrender.plots(out, card, outputs["val"], arrays["val"])
    else:
        cardrender.curves(out)
    (out / "README.md").write_text(cardrender.render(out))
    return card.to_dict()


def finalize(cfg: TrainConfig, run_dir: str | Path, out_dir: str | Path) -> dict:
    """Package a (possibly unfinished) training run's best checkpoint as a model folder.

    This is where the validation split is used: once, for the card's figures."""
    run_dir, out = Path(run_dir), Path(out_dir)
    state = json.loads((run_dir / "state.json").read_text())
    info = {
        "seconds": state.get("seconds"),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "gpu": has_gpu(),
        "backend": keras.config.backend(),
        "precision": cfg.precision,
        "train_images_per_second": state.get("images_per_second"),
    }
    final = dataclasses.replace(cfg, report_validation=True)
    return write_model_folder(final, run_dir, out, split_samples(cfg), info)
