"""The fit loop: build, compile, fit with per-epoch tune checks, package."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras

from pneumo.inference.device import has_gpu
from pneumo.inference.preprocess import PreprocessConfig
from pneumo.nets import losses, networks
from pneumo.training.callbacks import KEY, TuneCheckpoint
from pneumo.training import packed
from pneumo.training.config import Augment, TrainConfig
from pneumo.training.data import (
    BalancedBatches,
    cached_arrays,
    cached_native,
    encoded_arrays,
    split_samples,
)
from pneumo.training.packaging import load_init_weights, slim_weights, write_model_folder


def precision_policy(cfg: TrainConfig, gpu: bool) -> str:
    """The Keras dtype policy for this run."""
    if cfg.precision == "auto":
        return "mixed_float16" if gpu else "float32"
    return cfg.precision


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Adam with an optional linear warm-up and cosine decay; one loss per named output."""
    total = steps_per_epoch * cfg.epochs
    warmup = steps_per_epoch * cfg.warmup_epochs
    if cfg.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate * (0.1 if warmup else 1.0),
            max(1, total - warmup),
            alpha=0.05,
            warmup_target=cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    else:
        lr = cfg.learning_rate
    mask_loss = losses.get_loss(cfg.loss)
    image_loss = losses.image_bce
    names = list(model.output_names)
    mask_names = [n for n in names if n != networks.IMAGE_OUTPUT]
    con = cfg.pairs
    final_mask_loss = mask_loss
    if con.on:
        image_loss = losses.paired_image_loss(image_loss, con.weight)
        if con.mask_weight > 0:
            final_mask_loss = losses.paired_mask_loss(
                mask_loss, con.mask_weight, con.evidence_pixels / con.reference_size**2
            )
    weights = dict(
        zip(mask_names, cfg.deep_supervision[-len(mask_names) :] if len(mask_names) > 1 else [1.0])
    )
    loss, metrics = {}, {}
    for name in names:
        if name == networks.IMAGE_OUTPUT:
            loss[name], weights[name] = image_loss, cfg.image_loss_weight
        else:
            loss[name] = final_mask_loss if name == mask_names[-1] else mask_loss
    metrics[mask_names[-1]] = [losses.dice_coef]
    if len(names) == 1:  # a single-output model (U-Net)
        loss, weights, metrics = loss[names[0]], None, [losses.dice_coef]
    model.compile(
        optimizer=keras.optimizers.Adam(lr), loss=loss, loss_weights=weights, metrics=metrics
    )


def build_for_training(cfg: TrainConfig, out: Path, resume: bool):
    """The network, with ImageNet encoder weights or a warm start when the config says so."""
    model = networks.build_model(cfg.architecture)
    fresh = not (resume and (out / "state.json").exists())
    if cfg.init_weights and fresh:
        load_init_weights(model, cfg.init_weights)
    elif cfg.encoder_weights and fresh:
        n = networks.load_encoder_weights(model, cfg.architecture, cfg.encoder_weights)
        print(f"encoder: {n} layers from {cfg.encoder_weights}", flush=True)
    return model


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, verbose: int = 1) -> dict:
    """Train a model and write its folder. Returns the model card dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    gpu = has_gpu()
    keras.mixed_precision.set_global_policy(precision_policy(cfg, gpu))
    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    arch_size = cfg.architecture["args"].get("input_size")
    if arch_size != pcfg.size:
        raise ValueError(f"architecture input_size {arch_size} != preprocess size {pcfg.size}")
    augment = Augment(**cfg.augment)
    if cfg.packed:
        data, tune_name = None, "tune"
        arrays = packed.unpack(cfg.packed, pcfg)
    else:
        data = split_samples(cfg)
        tune_name = "tune" if data.samples["tune"] else "val"  # split_v1 has no tune split
        arrays = {
            name: cached_arrays(
                data.samples[name], data.table, pcfg, cfg.cache_dir, progress=verbose > 0
            )
            for name in ("train", tune_name)
        }
    encoded = None
    if augment.encodes or cfg.pairs.on or cfg.tune_encodings != ["original"]:
        if data is not None:  # a pack holds its films at full size already
            for name in ("train", tune_name):
                arrays[name].native = cached_native(
                    data.samples[name], cfg.native_size, cfg.cache_dir, progress=verbose > 0
                )
        encoded = {
            name: encoded_arrays(arrays[tune_name], name, pcfg) for name in cfg.tune_encodings
        }
    model = build_for_training(cfg, out, resume)
    steps = cfg.steps_per_epoch or max(1, len(arrays["train"]) // cfg.batch_size)
    seq = BalancedBatches(arrays["train"], cfg, pcfg, list(model.output_names), augment, steps)
    compile_model(model, cfg, steps)
    initial_epoch, best, best_epoch, prior = 0, -1.0, 0, 0.0
    state_path = out / "state.json"
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        prior = float(state.get("seconds") or 0.0)
        model.load_weights(out / "last.weights.h5")
        initial_epoch = state["epoch"]
        if state.get("key") == KEY:
            best, best_epoch = state["best_score"], state["best_epoch"]
        seq.set_epoch(initial_epoch)
        # continue the learning-rate schedule where it stopped (no warm restart)
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(initial_epoch * len(seq))
    check = TuneCheckpoint(arrays[tune_name], pcfg, out, cfg, best, best_epoch, prior, encoded)
    started = time.time()
    model.fit(
        seq,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        verbose=verbose,
        callbacks=[check, keras.callbacks.CSVLogger(str(out / "log.csv"), append=resume)],
    )
    keras.mixed_precision.set_global_policy("float32")
    info = {
        "seconds": round(time.time() - started + prior, 1),
        "epochs_run": check.epochs_run or initial_epoch,
        "best_epoch": check.best_epoch,
        "gpu": gpu,
        "backend": keras.config.backend(),
        "precision": precision_policy(cfg, gpu),
        "train_images_per_second": round(check.images_per_second(), 2),
    }
    if data is None:  # a packed run: checkpoints only, `pneumo finalize` makes the folder
        slim_weights(cfg, out / "weights.weights.h5")
        info["packed"] = cfg.packed
        (out / "training.json").write_text(json.dumps(info, indent=2))
        return {"training": info, "validation": {}}
    return write_model_folder(cfg, out, out, data, info, progress=verbose > 0)
