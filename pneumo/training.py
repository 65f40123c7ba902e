"""Training: config -> cached arrays -> augmented batches -> model folder.

``train(config)`` writes a model folder:
``weights.weights.h5`` (best validation score), ``last.weights.h5`` and
``state.json`` (for ``--resume``), ``model.json`` (the card: architecture,
preprocessing, post-processing thresholds, data counts, metrics, config),
``log.csv`` and ``curves.png``.

Runs on any Keras backend (TensorFlow on CPU here; JAX or torch on a GPU).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pneumo import dataset, rle
from pneumo.datacfg import DataConfig
from pneumo.imaging import read_image
from pneumo.preprocess import PreprocessConfig, preprocess_uint8, resize_mask


@dataclass
class Augment:
    """Augmentation strengths; geometric ones move image and mask together."""

    hflip: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    shift: float = 0.06
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.2
    grid_distort: float = 0.0


@dataclass
class TrainConfig:
    """Everything a training run needs; saved inside the model card."""

    architecture: dict[str, Any] = field(default_factory=lambda: {
        "name": "double_unet", "args": {"input_size": 256, "depth": 4, "width": 0.25,
                                        "channels": 1}})
    preprocess: dict[str, Any] = field(default_factory=lambda: {"size": 256, "channels": 1})
    data: str = "configs/data_siim.json"
    batch_size: int = 8
    epochs: int = 20
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    loss: str = "bce_dice"
    deep_supervision: list[float] = field(default_factory=lambda: [0.5, 1.0])
    positive_fraction: float = 0.5
    augment: dict[str, Any] = field(default_factory=lambda: asdict(Augment()))
    early_stopping_patience: int = 8
    tta: bool = True
    tune_prevalence: float = 0.5
    seed: int = 2026
    init_weights: str | None = None
    max_train: int | None = None
    max_val: int | None = None
    cache_dir: str = ".cache"

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        raw = json.loads(Path(path).read_text())
        unknown = set(raw) - set(cls.__dataclass_fields__) - {"_comment"}
        if unknown:
            raise ValueError(f"unknown keys in {Path(path).name}: {sorted(unknown)}")
        raw.pop("_comment", None)
        return cls(**raw)


# --------------------------------------------------------------------------- data


def load_example(sample: dataset.Sample, table: dict[str, list[str]],
                 pcfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Decode one sample to (uint8 image size x size, uint8 0/1 mask size x size)."""
    pixels = read_image(sample.path).pixels
    x = preprocess_uint8(pixels, pcfg)
    if sample.positive and sample.image_id in table:
        mask = rle.merge(table[sample.image_id])
        y = resize_mask(mask, pcfg.size)[..., 0]
    else:
        y = np.zeros((pcfg.size, pcfg.size), np.float32)
    return x, (y > 0.5).astype(np.uint8)


def cached_arrays(samples: list[dataset.Sample], table: dict[str, list[str]],
                  pcfg: PreprocessConfig, cache_dir: str | Path,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize every sample once; reuse the ``.npz`` cache afterwards."""
    key = hashlib.sha256(json.dumps(
        [pcfg.size] + [(s.image_id, s.path) for s in samples]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"arrays_{pcfg.size}_{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["x"], z["y"]
    xs = np.zeros((len(samples), pcfg.size, pcfg.size), np.uint8)
    ys = np.zeros_like(xs)
    iterator = range(len(samples))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=f"decoding {len(samples)} images", unit="img")
    for i in iterator:
        xs[i], ys[i] = load_example(samples[i], table, pcfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=xs, y=ys)
    return xs, ys


def augment_pair(x: np.ndarray, y: np.ndarray, aug: Augment,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Augment one uint8 image and its 0/1 mask (both size x size)."""
    size = x.shape[0]
    if rng.random() < aug.hflip:
        x, y = x[:, ::-1], y[:, ::-1]
    angle = rng.uniform(-aug.rotate_deg, aug.rotate_deg)
    scale = 1.0 + rng.uniform(-aug.scale, aug.scale)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += rng.uniform(-aug.shift, aug.shift, 2) * size
    x = cv2.warpAffine(np.ascontiguousarray(x), m, (size, size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT_101)
    y = cv2.warpAffine(np.ascontiguousarray(y), m, (size, size), flags=cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_REFLECT_101)
    if aug.grid_distort > 0:
        x, y = _grid_distort(x, y, aug.grid_distort, rng)
    xf = x.astype(np.float32) / 255.0
    xf = xf * (1.0 + rng.uniform(-aug.contrast, aug.contrast)) + rng.uniform(
        -aug.brightness, aug.brightness)
    xf = np.clip(xf, 0.0, 1.0) ** math.exp(rng.uniform(-aug.gamma, aug.gamma))
    return xf.astype(np.float32), y.astype(np.float32)


def _grid_distort(x, y, strength: float, rng: np.random.Generator, cells: int = 5):
    size = x.shape[0]
    knots = np.linspace(0, size - 1, cells + 1)
    jitter = rng.uniform(-strength, strength, (2, cells + 1, cells + 1)) * size / cells
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0
    gx, gy = np.meshgrid(knots, knots)
    map_x = cv2.resize((gx + jitter[0]).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    map_y = cv2.resize((gy + jitter[1]).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    x = cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    y = cv2.remap(y, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return x, y


def balanced_indices(labels: np.ndarray, n: int, positive_fraction: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` indices so that about ``positive_fraction`` of them are positives."""
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(pos) == 0 or len(neg) == 0:
        return rng.choice(len(labels), n, replace=True)
    n_pos = int(round(n * positive_fraction))
    idx = np.concatenate([rng.choice(pos, n_pos, replace=True),
                          rng.choice(neg, n - n_pos, replace=True)])
    rng.shuffle(idx)
    return idx


def make_sequence(xs, ys, cfg: TrainConfig, n_outputs: int, channels: int):
    """A ``keras.utils.PyDataset`` of augmented, class-balanced batches."""
    import keras

    aug = Augment(**cfg.augment)
    labels = ys.reshape(len(ys), -1).max(axis=1) > 0
    steps = cfg.steps_per_epoch or max(1, len(xs) // cfg.batch_size)

    class BalancedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self._draw()

        def _draw(self):
            rng = np.random.default_rng(cfg.seed + self.epoch)
            self.order = balanced_indices(labels, steps * cfg.batch_size,
                                          cfg.positive_fraction, rng)
            self.rng = rng

        def __len__(self):
            return steps

        def __getitem__(self, i):
            idx = self.order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            rng = np.random.default_rng([cfg.seed, self.epoch, i])
            bx, by = zip(*(augment_pair(xs[j], ys[j], aug, rng) for j in idx))
            bx = np.repeat(np.stack(bx)[..., None], channels, axis=-1)
            by = np.stack(by)[..., None]
            return bx, tuple([by] * n_outputs) if n_outputs > 1 else by

        def on_epoch_end(self):
            self.epoch += 1
            self._draw()

    return BalancedBatches()


# --------------------------------------------------------------------------- training


def has_gpu() -> bool:
    """True when the active Keras backend sees a GPU."""
    import keras
    backend = keras.config.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax
            return jax.devices()[0].platform == "gpu"
        if backend == "torch":
            import torch
            return torch.cuda.is_available()
    except Exception:
        return False
    return False


def split_samples(cfg: TrainConfig) -> tuple[DataConfig, dict, list, list]:
    """Load the data config, the ground truth and the committed split."""
    dcfg = DataConfig.load(cfg.data)
    table = dcfg.table()
    _, samples = dcfg.samples(table)
    if not dcfg.split or not dcfg.split.exists():
        raise FileNotFoundError(f"split file missing: {dcfg.split} (run `pneumo index --write`)")
    split = dataset.read_split(dcfg.split)
    train = [s for s in samples if split.get(s.image_id) == "train"]
    val = [s for s in samples if split.get(s.image_id) == "val"]
    rng = np.random.default_rng(cfg.seed)
    if cfg.max_train and len(train) > cfg.max_train:
        train = [train[i] for i in sorted(rng.choice(len(train), cfg.max_train, replace=False))]
    if cfg.max_val and len(val) > cfg.max_val:
        val = [val[i] for i in sorted(rng.choice(len(val), cfg.max_val, replace=False))]
    return dcfg, table, train, val


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
          verbose: int = 1) -> dict:
    """Train a model and write its folder. Returns the model card dict."""
    import keras

    from pneumo import losses, networks

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    gpu = has_gpu()
    if gpu:
        keras.mixed_precision.set_global_policy("mixed_float16")
    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    arch_size = cfg.architecture["args"].get("input_size")
    if arch_size != pcfg.size:
        raise ValueError(f"architecture input_size {arch_size} != preprocess size {pcfg.size}")
    dcfg, table, train_s, val_s = split_samples(cfg)
    xs, ys = cached_arrays(train_s, table, pcfg, cfg.cache_dir, progress=verbose > 0)
    vx, vy = cached_arrays(val_s, table, pcfg, cfg.cache_dir, progress=verbose > 0)

    model = networks.build_model(cfg.architecture)
    if cfg.init_weights and not (resume and (out / "state.json").exists()):
        load_init_weights(model, cfg.init_weights)
    n_out = len(model.outputs)
    seq = make_sequence(xs, ys, cfg, n_out, pcfg.channels)
    total_steps = len(seq) * cfg.epochs
    lr = (keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total_steps, alpha=0.05)
          if cfg.lr_schedule == "cosine" else cfg.learning_rate)
    loss = losses.get_loss(cfg.loss)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=[loss] * n_out if n_out > 1 else loss,
        loss_weights=cfg.deep_supervision[-n_out:] if n_out > 1 else None,
        metrics=([[]] * (n_out - 1) + [[losses.dice_coef]]) if n_out > 1 else [losses.dice_coef],
    )
    initial_epoch, best, prior_seconds = 0, [-1.0, -1.0], 0.0
    state_path = out / "state.json"
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        prior_seconds = float(state.get("seconds") or 0.0)
        model.load_weights(out / "last.weights.h5")
        initial_epoch = state["epoch"]
        best = state["best_score"] if state.get("key") == "siim_balanced" else [-1.0, -1.0]
        seq.epoch = initial_epoch
        seq._draw()
        # continue the learning-rate schedule where it stopped (no warm restart)
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(initial_epoch * len(seq))

    callback = _ValidationCallback(model, vx, vy, pcfg, out, best, cfg)
    callback.prior_seconds = prior_seconds
    started = time.time()
    model.fit(seq, epochs=cfg.epochs, initial_epoch=initial_epoch, verbose=verbose,
              callbacks=[callback, keras.callbacks.CSVLogger(str(out / "log.csv"),
                                                             append=resume)])
    train_seconds = time.time() - started + callback.prior_seconds
    card = write_model_folder(cfg, out, out, _data_info(dcfg, train_s, val_s), {
        "seconds": round(train_seconds, 1), "epochs_run": callback.epochs_run,
        "best_epoch": callback.best_epoch, "gpu": gpu, "backend": keras.config.backend(),
        "train_images_per_second": round(callback.images_seen / max(time.time() - started, 1e-9), 2)},
        vx, vy)
    return card


def load_model_weights(model, path: str | Path) -> None:
    """Load a run's weights file into ``model``, ignoring its optimizer variables."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "skipping optimizer variables"
        model.load_weights(path)


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
        raise ValueError(f"init_weights: {path} does not fit this architecture "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from exc


def _data_info(dcfg, train_s, val_s) -> dict:
    return {"train_images": len(train_s), "val_images": len(val_s),
            "train_positive": int(sum(bool(s.positive) for s in train_s)),
            "val_positive": int(sum(bool(s.positive) for s in val_s)),
            "sources": sorted({s.source for s in train_s + val_s}),
            "split_file": str(Path(dcfg.split).name) if dcfg.split else None}


def write_model_folder(cfg: TrainConfig, run_dir: Path, out: Path, data_info: dict,
                       training_info: dict, vx: np.ndarray, vy: np.ndarray) -> dict:
    """Load the run's best weights, tune post-processing on validation, measure,
    and write ``out`` (weights, model.json, README.md, log and curves)."""
    import shutil
    from pneumo import modelcard, networks
    from pneumo.inference import finish_card, predict_arrays
    out.mkdir(parents=True, exist_ok=True)
    # a fresh, uncompiled network: the shipped file holds weights, not optimizer state
    model = networks.build_model(cfg.architecture)
    load_model_weights(model, run_dir / "weights.weights.h5")
    model.save_weights(out / "weights.weights.h5")
    if run_dir != out:
        for log in run_dir.glob("log*.csv"):  # a resumed run may have several parts
            shutil.copy(log, out / log.name)
    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    probs = predict_arrays(model, vx, pcfg, tta=cfg.tta)
    card = finish_card(out, cfg, pcfg, probs, vy, data_info, training_info,
                       parameters=model.count_params())
    _plot_curves(out)
    (out / "README.md").write_text(modelcard.render(out))
    return card


def finalize(cfg: TrainConfig, run_dir: str | Path, out_dir: str | Path) -> dict:
    """Package a (possibly unfinished) training run's best checkpoint as a model folder."""
    import keras
    run_dir, out = Path(run_dir), Path(out_dir)
    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    dcfg, table, train_s, val_s = split_samples(cfg)
    vx, vy = cached_arrays(val_s, table, pcfg, cfg.cache_dir)
    state = json.loads((run_dir / "state.json").read_text())
    info = {"seconds": state.get("seconds"), "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"], "gpu": has_gpu(),
            "backend": keras.config.backend(),
            "train_images_per_second": state.get("images_per_second")}
    return write_model_folder(cfg, run_dir, out, _data_info(dcfg, train_s, val_s), info, vx, vy)


def epoch_validation(model, vx: np.ndarray, vy: np.ndarray, pcfg: PreprocessConfig) -> dict:
    """Validation scores for checkpoint selection.

    The checkpoint key is the SIIM score at a balanced 50 % prevalence with a
    gate re-tuned on a small grid each epoch: at 22 % prevalence a model that
    predicts nothing already scores 0.78, so that score would prefer an empty
    model to one that finds pneumothoraces. The re-weighted (22 %) score and
    the ungated positive-image Dice are logged beside it.
    """
    from pneumo import metrics, postprocess
    from pneumo.inference import predict_arrays
    probs = predict_arrays(model, vx, pcfg, tta=False)
    truths = [y.astype(bool) for y in vy]
    grid = dict(pixel_thresholds=(0.5,), top_thresholds=(0.5, 0.6, 0.7, 0.8, 0.9),
                min_top_pixels=(10, 40, 160), min_areas=(20,))
    pp, balanced = postprocess.grid_search(list(probs), truths, pcfg.size, prevalence=0.5,
                                           **grid)
    gated = metrics.summarise(truths, [postprocess.apply(p, pp)[0] for p in probs])
    positives = [i for i, t in enumerate(truths) if t.any()]
    raw = float(np.mean([metrics.dice(truths[i], probs[i] > 0.5) for i in positives])) \
        if positives else float("nan")
    return {"siim_balanced": balanced, "siim_reweighted": gated["siim_score_reweighted"],
            "siim": gated["siim_score"], "dice_positive": gated["dice_positive"],
            "dice_positive_raw": raw}


class _ValidationCallback:
    """Per-epoch SIIM-style validation, best checkpoint, resume state, early stopping."""

    def __new__(cls, *args, **kwargs):
        import keras

        class Impl(keras.callbacks.Callback):
            def __init__(self, model, vx, vy, pcfg, out, best, cfg):
                super().__init__()
                self._m, self.vx, self.vy, self.pcfg = model, vx, vy, pcfg
                self.out, self.best, self.cfg = out, best, cfg
                self.best_epoch, self.epochs_run, self.wait, self.images_seen = 0, 0, 0, 0
                self.prior_seconds, self.started = 0.0, time.time()

            def on_train_batch_end(self, batch, logs=None):
                self.images_seen += self.cfg.batch_size

            def on_epoch_end(self, epoch, logs=None):
                s = epoch_validation(self._m, self.vx, self.vy, self.pcfg)
                if logs is not None:
                    logs.update({f"val_{k}": v for k, v in s.items()})
                print(f" - val SIIM balanced {s['siim_balanced']:.4f}, re-weighted "
                      f"{s['siim_reweighted']:.4f}, positive Dice {s['dice_positive']:.4f} "
                      f"(gated), {s['dice_positive_raw']:.4f} (ungated)", flush=True)
                self.epochs_run = epoch + 1
                self._m.save_weights(self.out / "last.weights.h5")
                (self.out / "epochs").mkdir(exist_ok=True)
                self._m.save_weights(self.out / "epochs" / f"epoch_{epoch + 1:03d}.weights.h5")
                key = [s["siim_balanced"], s["dice_positive_raw"]]
                if key > self.best:
                    self.best, self.best_epoch, self.wait = key, epoch + 1, 0
                    self._m.save_weights(self.out / "weights.weights.h5")
                else:
                    self.wait += 1
                    if self.wait >= self.cfg.early_stopping_patience:
                        self._m.stop_training = True
                elapsed = time.time() - self.started
                (self.out / "state.json").write_text(json.dumps(
                    {"epoch": epoch + 1, "key": "siim_balanced", "best_score": self.best,
                     "best_epoch": self.best_epoch,
                     "seconds": round(self.prior_seconds + elapsed, 1),
                     "images_per_second": round(self.images_seen / max(elapsed, 1e-9), 2)}))

        return Impl(*args, **kwargs)


def _plot_curves(out: Path) -> None:
    import csv
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    log = out / "log.csv"
    if not log.exists():
        return
    rows = list(csv.DictReader(open(log)))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [float(r["loss"]) for r in rows], label="train loss")
    axes[0].set_xlabel("epoch"); axes[0].legend()
    for key in ("val_siim_balanced", "val_siim_reweighted", "val_dice_positive",
                "val_dice_positive_raw"):
        if key in rows[0]:
            axes[1].plot(epochs, [float(r[key]) for r in rows], label=key)
    axes[1].set_xlabel("epoch"); axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=80)
    plt.close(fig)
