"""Per-epoch checks on the tune split: scores, checkpoints, resume state, time limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from pneumo.data.examples import Arrays
from pneumo.evaluation import metrics
from pneumo.evaluation.scoring import auc_by_source
from pneumo.inference.predictor import predict_batches
from pneumo.inference.preprocess import PreprocessConfig
from pneumo.training.config import TrainConfig

KEY = "key"


def epoch_scores(
    model,
    arrays: Arrays,
    pcfg: PreprocessConfig,
    images: np.ndarray | None = None,
    by: str = "pooled",
) -> dict:
    """Scores for checkpoint choice on the tune split (no TTA).

    ``auc``: image-level AUC of the model's image probability (the head where
    the model has one, else the mask evidence); with ``by="worst_source"`` the
    lowest of the AUCs within each source instead (pooled AUC rewards telling
    the sources apart, which here tells the labels apart); ``dice_positive_raw``:
    mean Dice on positive images with a mask at pixel threshold 0.5, no gate.
    The checkpoint key is their mean: a model must both find and outline.
    """
    out = predict_batches(model, arrays.x if images is None else images, pcfg, tta=False)
    score = out.head if out.head is not None else out.evidence(100)
    pooled = metrics.roc_auc(arrays.label, score)
    within = {
        k: v["auc"]
        for k, v in auc_by_source(score, arrays.label, arrays.source).items()
        if v["auc"] is not None
    }
    auc = min(within.values()) if by == "worst_source" and within else pooled
    pos = np.flatnonzero(arrays.label & arrays.has_mask)
    raw = (
        float(np.mean([metrics.dice(arrays.y[i] > 0, out.maps[i] > 0.5) for i in pos]))
        if len(pos)
        else float("nan")
    )
    key = np.nanmean([auc, raw]) if not (np.isnan(auc) and np.isnan(raw)) else -1.0
    return {
        "auc": auc,
        "pooled_auc": pooled,
        **{f"{k}_auc": v for k, v in within.items()},
        "dice_positive_raw": raw,
        KEY: float(key),
        "_head": out.head,
    }


def worst_encoding_scores(
    model,
    arrays: Arrays,
    pcfg: PreprocessConfig,
    encoded: dict[str, np.ndarray],
    by: str = "pooled",
) -> dict:
    """:func:`epoch_scores` on each encoding of the tune split; the key is the worst one's.

    Also reports, per encoding, the mean absolute change of the image head
    against the first encoding (the original files): a model that reads the
    file's encoding moves here even when its AUC does not.
    """
    per = {name: epoch_scores(model, arrays, pcfg, images, by) for name, images in encoded.items()}
    first = next(iter(per.values()))
    worst = min(per, key=lambda n: per[n][KEY])
    out = {
        "auc": per[worst]["auc"],
        "dice_positive_raw": per[worst]["dice_positive_raw"],
        KEY: per[worst][KEY],
        "worst_encoding": worst,
    }
    for name, s in per.items():
        out[f"{name}_auc"], out[f"{name}_dice"] = s["auc"], s["dice_positive_raw"]
        for k, v in s.items():
            if k.endswith("_auc") and k != "pooled_auc":
                out[f"{name}_{k}"] = v
        if s["_head"] is not None and first["_head"] is not None:
            out[f"{name}_mean_abs_dhead"] = float(np.mean(np.abs(s["_head"] - first["_head"])))
    return out


class TuneCheckpoint(keras.callbacks.Callback):
    """After each epoch: score on the tune split, save last/best/per-epoch weights
    and ``state.json`` (for ``--resume``), stop early or at the time limit."""

    def __init__(
        self,
        arrays: Arrays,
        pcfg: PreprocessConfig,
        out: Path,
        cfg: TrainConfig,
        best: float = -1.0,
        best_epoch: int = 0,
        prior_seconds: float = 0.0,
        encoded: dict[str, np.ndarray] | None = None,
    ):
        super().__init__()
        self.encoded = encoded or {"original": arrays.x}
        self.arrays, self.pcfg, self.out, self.cfg = arrays, pcfg, out, cfg
        self.best, self.best_epoch, self.prior_seconds = best, best_epoch, prior_seconds
        self.epochs_run, self.wait, self.images_seen = 0, 0, 0
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.images_seen += self.cfg.batch_size

    def on_epoch_end(self, epoch, logs=None):
        s = worst_encoding_scores(
            self.model, self.arrays, self.pcfg, self.encoded, self.cfg.checkpoint_by
        )
        if logs is not None:
            logs.update({f"tune_{k}": v for k, v in s.items() if k != "worst_encoding"})
        print(
            f" - tune (worst encoding: {s['worst_encoding']}) AUC {s['auc']:.4f}, positive "
            f"Dice (raw) {s['dice_positive_raw']:.4f}; "
            + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if k.endswith("mean_abs_dhead")),
            flush=True,
        )
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
        (self.out / "state.json").write_text(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    "key": KEY,
                    "best_score": self.best,
                    "best_epoch": self.best_epoch,
                    "seconds": round(elapsed, 1),
                    "images_per_second": round(self.images_per_second(), 2),
                }
            )
        )

    def images_per_second(self) -> float:
        return self.images_seen / max(time.time() - self.started, 1e-9)
