"""Training data: the committed split, decoded arrays, balanced augmented batches."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pneumo.data import dataset
from pneumo.data.datacfg import DataConfig
from pneumo.data.examples import Arrays, decode_examples, labelled, preprocess_config
from pneumo.inference.preprocess import PreprocessConfig, model_image, model_input
from pneumo.io import encodings
from pneumo.io.imaging import read_image
from pneumo.nets.networks import IMAGE_OUTPUT
from pneumo.progress import track
from pneumo.training.augment import augment_pair, encode_augment
from pneumo.training.config import Augment, TrainConfig

SPLITS = ("train", "tune", "val")


@dataclass
class SplitData:
    """The data config, ground truth and samples of each split."""

    dcfg: DataConfig
    table: dict[str, list[str]]
    samples: dict[str, list[dataset.Sample]]
    train_only: frozenset[str] = frozenset()  # ImageIds of the train-only (pseudo-labelled) films

    def info(self) -> dict:
        """Counts for the model card."""
        out = {
            "sources": sorted({s.source for v in self.samples.values() for s in v}),
            "split_file": Path(self.dcfg.split).name if self.dcfg.split else None,
            "split_sha256": hashlib.sha256(Path(self.dcfg.split).read_bytes()).hexdigest()
            if self.dcfg.split
            else None,
            "ground_truth": Path(self.dcfg.rle_csv).name,
        }
        for name, items in self.samples.items():
            out[f"{name}_images"] = len(items)
            out[f"{name}_positive"] = sum(bool(s.positive) for s in items)
            out[f"{name}_label_only"] = sum(not s.has_mask for s in items)
        if self.dcfg.train_only:
            out["train_only"] = {
                "images": sum(s.image_id in self.train_only for s in self.samples["train"]),
                "labels": [
                    {
                        "file": source.rle_csv.name,
                        "sha256": hashlib.sha256(source.rle_csv.read_bytes()).hexdigest(),
                        "origin": source.origin,
                    }
                    for source in self.dcfg.train_only
                ],
            }
        return out


def split_samples(cfg: TrainConfig) -> SplitData:
    """Load the data config, the ground truth and the committed split.

    A split file without ``tune`` rows (split_v1) gives an empty tune split.
    """
    dcfg = DataConfig.load(cfg.data)
    table = dcfg.table()
    _, samples = dcfg.samples(table)
    if not dcfg.split or not dcfg.split.exists():
        raise FileNotFoundError(f"split file missing: {dcfg.split} (run `pneumo index --write`)")
    split = dataset.read_split(dcfg.split)
    by_split = {name: [s for s in samples if split.get(s.image_id) == name] for name in SPLITS}
    extra_table = dcfg.train_only_table()
    extra = dcfg.train_only_samples(extra_table)
    clash = {s.image_id for s in extra} & set(split)
    if clash:
        raise ValueError(
            f"{len(clash)} train-only film(s) are in the split file too, e.g. {min(clash)}"
        )
    by_split["train"] += extra
    table = {**table, **extra_table}
    rng = np.random.default_rng(cfg.seed)
    for name, limit in (("train", cfg.max_train), ("tune", cfg.max_val), ("val", cfg.max_val)):
        items = by_split[name]
        if limit and len(items) > limit:
            by_split[name] = [
                items[i] for i in sorted(rng.choice(len(items), limit, replace=False))
            ]
    return SplitData(dcfg, table, by_split, frozenset(s.image_id for s in extra))


def cached_arrays(
    samples: list[dataset.Sample],
    table: dict[str, list[str]],
    preprocess: PreprocessConfig | int,
    cache_dir: str | Path,
    progress: bool = True,
) -> Arrays:
    """Decode and resize every sample once; reuse the ``.npz`` cache afterwards."""
    pcfg = preprocess_config(preprocess)
    size = pcfg.size
    # every preprocessing field that shapes the cached uint8 image (channels and
    # normalisation act later, in model_input), so a new field cannot share a stale cache
    shaping = {k: v for k, v in pcfg.to_dict().items() if k not in ("channels", "normalisation")}
    version = [3, shaping]
    key = hashlib.sha256(
        json.dumps(
            version + [(s.image_id, s.path, s.positive, s.has_mask) for s in samples]
        ).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"arrays_{size}_{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return labelled(samples, z["x"], z["y"])
    arrays = decode_examples(
        samples, table, pcfg, f"decoding {len(samples)} images" if progress else None
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=arrays.x, y=arrays.y)
    return arrays


def native_image(sample: dataset.Sample, cap: int) -> np.ndarray:
    """One sample's display pixels at its own resolution, shrunk to at most ``cap`` a side."""
    x = read_image(sample.path).pixels
    return encodings.downscale(x, cap / max(x.shape)) if max(x.shape) > cap else x


def cached_native(
    samples: list[dataset.Sample], cap: int, cache_dir: str | Path, progress: bool = True
) -> list[np.ndarray]:
    """Every sample's full-size pixels (for encoding augmentation); cached as ``.npz``."""
    key = hashlib.sha256(
        json.dumps([cap, 1] + [(s.image_id, s.path) for s in samples]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"native_{cap}_{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return [z[f"x{i}"] for i in range(len(samples))]
    iterator = range(len(samples))
    if progress:
        iterator = track(iterator, f"decoding {len(samples)} images at full size")
    out = [native_image(samples[i], cap) for i in iterator]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"x{i}": x for i, x in enumerate(out)})
    return out


def encoded_arrays(arrays: Arrays, encoding: str, preprocess: PreprocessConfig | int) -> np.ndarray:
    """Model-size images of ``arrays`` after storing each full-size film as ``encoding``
    and reading it back through the upload reader (``original``: unchanged)."""
    pcfg = preprocess_config(preprocess)
    if encoding == "original":
        return arrays.x
    if arrays.native is None:
        raise ValueError("encoded_arrays needs the full-size images (Arrays.native)")
    out = np.zeros_like(arrays.x)
    for i, pixels in enumerate(arrays.native):
        data, _ = encodings.encode(pixels, encoding)
        out[i] = model_image(read_image(data).pixels, pcfg)
    return out


def balanced_indices(
    labels: np.ndarray,
    n: int,
    positive_fraction: float,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    group_balance: float = 0.0,
) -> np.ndarray:
    """Draw ``n`` indices so that about ``positive_fraction`` of them are positives.

    With ``groups`` (e.g. the source of each image) and ``group_balance`` ``a`` > 0,
    an image in a group of ``k`` images of its class is drawn with weight
    ``k ** -a`` (``a = 1``: every group equally often; ``0``: every image equally
    often). This keeps a rare kind, such as NIH positives or SIIM negatives, from
    being so rare that the source of an image predicts its label.
    """
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(pos) == 0 or len(neg) == 0:
        return rng.choice(len(labels), n, replace=True)
    n_pos = int(round(n * positive_fraction))

    def draw(members: np.ndarray, k: int) -> np.ndarray:
        if groups is None or group_balance <= 0:
            return rng.choice(members, k, replace=True)
        _, inverse, counts = np.unique(groups[members], return_inverse=True, return_counts=True)
        weight = counts[inverse].astype(np.float64) ** -group_balance
        return rng.choice(members, k, replace=True, p=weight / weight.sum())

    idx = np.concatenate([draw(pos, n_pos), draw(neg, n - n_pos)])
    rng.shuffle(idx)
    return idx


def targets(
    output_names: list[str], y: np.ndarray, label: np.ndarray, has_mask: np.ndarray
) -> tuple[dict | np.ndarray, tuple | np.ndarray]:
    """Targets (by output name) and per-image sample weights (a tuple in output order).

    Mask outputs learn only from images whose mask is ground truth (weight 0
    for label-only positives); the image-level output learns from all. (Keras
    3 takes sample weights for several outputs in order, not by name.)
    """
    ys, weights = {}, []
    for name in output_names:
        if name == IMAGE_OUTPUT:
            ys[name] = label.astype(np.float32)[:, None]
            weights.append(np.ones(len(label), np.float32))
        else:
            ys[name] = y.astype(np.float32)[..., None]
            weights.append(has_mask.astype(np.float32))
    if len(output_names) == 1:  # a single-output model (U-Net) takes plain arrays
        return ys[output_names[0]], weights[0]
    return ys, tuple(weights)


class BalancedBatches(keras.utils.PyDataset):
    """Augmented, class-balanced batches of model input, targets and sample weights.

    Epoch ``e`` draws its order from ``seed + e`` and batch ``i`` augments with
    ``[seed, e, i]``, so a resumed run sees the batches an uninterrupted one would.
    With ``augment=None`` images pass unchanged (used to check that training and
    serving build identical input).
    """

    def __init__(
        self,
        arrays: Arrays,
        cfg: TrainConfig,
        pcfg: PreprocessConfig,
        output_names: list[str],
        augment: Augment | None,
        steps: int,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        self.arrays, self.cfg, self.pcfg = arrays, cfg, pcfg
        self.output_names, self.augment, self.steps = output_names, augment, steps
        self.pairs = cfg.pairs if augment is not None and cfg.pairs.on else None
        self.epoch = 0
        self._draw()

    def _draw(self) -> None:
        rng = np.random.default_rng(self.cfg.seed + self.epoch)
        self.order = balanced_indices(
            self.arrays.label,
            self.steps * self.cfg.batch_size,
            self.cfg.positive_fraction,
            rng,
            self.arrays.groups(self.cfg.balance_by),
            self.cfg.source_balance,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._draw()

    def __len__(self) -> int:
        return self.steps

    def batch(self, idx: np.ndarray, rng: np.random.Generator):
        """``(model input, targets, sample weights)`` for the images ``idx``.

        With consistency pairs on, the first half of ``idx`` is used, each film
        twice in a row: as augmented, then resized (:meth:`_pair`).
        """
        a = self.arrays
        if self.pairs is not None:
            idx = np.repeat(idx[: len(idx) // 2], 2)
            views = [self._pair(j, rng) for j in idx[::2]]
            bx = np.stack([v for pair in views for v in pair[0]])
            by = np.stack([m for pair in views for m in pair[1]])
        elif self.augment is None:
            bx, by = a.x[idx], a.y[idx]
        else:
            pairs = [augment_pair(self._image(j, rng), a.y[j], self.augment, rng) for j in idx]
            bx, by = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        ys, weights = targets(self.output_names, by, a.label[idx], a.has_mask[idx])
        return model_input(bx, self.pcfg), ys, weights

    def _pair(
        self, j: int, rng: np.random.Generator
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Film ``j`` as augmented and the same film resized at full size first
        (area down or bicubic up, :class:`pneumo.training.config.Consistency`), both given the same
        encoding, geometric and photometric draws. Returns ``(images, masks)``."""
        a, con = self.arrays, self.pairs
        if a.native is None:
            raise ValueError("consistency pairs need the full-size images (Arrays.native)")
        native = a.native[j]
        if rng.random() < con.down_share:
            resized = encodings.downscale(native, float(rng.uniform(*con.down)))
        else:
            resized = encodings.upscale(native, float(rng.uniform(*con.up)))
        encode_seed, geometry_seed = rng.integers(2**63, size=2)
        out = []
        for pixels in (native, resized):
            if self.augment.encodes:
                pixels = encode_augment(pixels, self.augment, np.random.default_rng(encode_seed))
            out.append(
                augment_pair(
                    model_image(pixels, self.pcfg),
                    a.y[j],
                    self.augment,
                    np.random.default_rng(geometry_seed),
                )
            )
        return (out[0][0], out[1][0]), (out[0][1], out[1][1])

    def _image(self, j: int, rng: np.random.Generator) -> np.ndarray:
        """Image ``j`` at model size, re-encoded at full size first when configured."""
        a = self.arrays
        if a.native is None or not self.augment.encodes:
            return a.x[j]
        return model_image(encode_augment(a.native[j], self.augment, rng), self.pcfg)

    def __getitem__(self, i):
        idx = self.order[i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size]
        return self.batch(idx, np.random.default_rng([self.cfg.seed, self.epoch, i]))

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)
