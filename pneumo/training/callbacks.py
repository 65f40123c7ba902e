"""Per-epoch checks on the tune split: scores, checkpoints, resume state, time limit."""
from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from pneumo import metrics
from pneumo.inference import predict_batches
from pneumo.preprocess import PreprocessConfig
from pneumo.training.config import TrainConfig
from pneumo.training.data import Arrays

KEY = "key"


def epoch_scores(model, arrays: Arrays, pcfg: PreprocessConfig) -> dict:
    """Scores for checkpoint choice on the tune split (no TTA).

    ``auc``: image-level AUC of the model's image probability (the head where
    the model has one, else the mask evidence); ``dice_positive_raw``: mean
    Dice on positive images with a mask at pixel threshold 0.5, no gate. The
    checkpoint key is their mean: a model must both find and outline.
    """
    out = predict_batches(model, arrays.x, pcfg, tta=False)
    score = out.head if out.head is not None else out.evidence(100)
    auc = metrics.roc_auc(arrays.label, score)
    pos = np.flatnonzero(arrays.label & arrays.has_mask)
    raw = float(np.mean([metrics.dice(arrays.y[i] > 0, out.maps[i] > 0.5) for i in pos])) \
        if len(pos) else float("nan")
    key = np.nanmean([auc, raw]) if not (np.isnan(auc) and np.isnan(raw)) else -1.0
    return {"auc": auc, "dice_positive_raw": raw, KEY: float(key)}


class TuneCheckpoint(keras.callbacks.Callback):
    """After each epoch: score on the tune split, save last/best/per-epoch weights
    and ``state.json`` (for ``--resume``), stop early or at the time limit."""

    def __init__(self, arrays: Arrays, pcfg: PreprocessConfig, out: Path, cfg: TrainConfig,
                 best: float = -1.0, best_epoch: int = 0, prior_seconds: float = 0.0):
        super().__init__()
        self.arrays, self.pcfg, self.out, self.cfg = arrays, pcfg, out, cfg
        self.best, self.best_epoch, self.prior_seconds = best, best_epoch, prior_seconds
        self.epochs_run, self.wait, self.images_seen = 0, 0, 0
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.images_seen += self.cfg.batch_size

    def on_epoch_end(self, epoch, logs=None):
        s = epoch_scores(self.model, self.arrays, self.pcfg)
        if logs is not None:
            logs.update({f"tune_{k}": v for k, v in s.items()})
        print(f" - tune AUC {s['auc']:.4f}, positive Dice (raw) {s['dice_positive_raw']:.4f}",
              flush=True)
        self.epochs_run = epoch + 1
        self.model.save_weights(self.out / "last.weights.h5")
        (self.out / "epochs").mkdir(exist_ok=True)
        self.model.save_weights(self.out / "epochs" / f"epoch_{epoch + 1:03d}.weights.h5")
        if s[KEY] > self.best:
            self.best, self.best_epoch, self.wait = s[KEY], epoch + 1, 0
            self.model.save_weights(self.out / "weights.weights.h5")
        else:
            self.wait += 1
            if self.wait >= self.cfg.early_stopping_patience:
                self.model.stop_training = True
        elapsed = self.prior_seconds + time.time() - self.started
        if self.cfg.max_seconds and elapsed >= self.cfg.max_seconds:
            self.model.stop_training = True
        (self.out / "state.json").write_text(json.dumps(
            {"epoch": epoch + 1, "key": KEY, "best_score": self.best,
             "best_epoch": self.best_epoch, "seconds": round(elapsed, 1),
             "images_per_second": round(self.images_per_second(), 2)}))

    def images_per_second(self) -> float:
        return self.images_seen / max(time.time() - self.started, 1e-9)
