"""A packed training set: the train and tune films of a data config in one ``.npz`` small
enough to travel to a GPU machine (issue 32, item 6: ``scripts/device_train.sh``).

Each film is stored once, at the canonical working resolution (``cv2.INTER_AREA`` when
larger), as JPEG bytes; its target mask at model size as packed bits; its label, mask
flag, source and file format beside it. Training from the pack (``TrainConfig.packed``)
starts the encoding augmentation from that 512-px film instead of the file's own size;
everything after it (the canonical step, augmentation, model input) is the same code.
The candidate it gives is scored on the real files by ``pneumo finalize`` on the CPU.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pneumo.data.examples import Arrays
from pneumo.inference.preprocess import PreprocessConfig, model_image
from pneumo.io import encodings

SPLITS = ("train", "tune")


@dataclass(frozen=True)
class PackReport:
    """What :func:`pack` wrote."""

    path: Path
    films: dict[str, int]
    bytes: int


def _encode(pixels: np.ndarray, size: int, quality: int) -> bytes:
    if max(pixels.shape) > size:
        pixels = encodings.downscale(pixels, size / max(pixels.shape))
    return encodings.jpeg_bytes(pixels, quality)


def _decode(data: np.ndarray) -> np.ndarray:
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def pack(
    arrays: dict[str, Arrays],
    ids: dict[str, list[str]],
    out: str | Path,
    size: int = 512,
    quality: int = 75,
    budget_mb: float | None = None,
) -> PackReport:
    """Write ``arrays`` (each with ``native`` films) as a pack; refuse one over budget.

    Raises ``ValueError`` when a split lacks its full-size films or the pack would be
    larger than ``budget_mb`` (nothing is written then).
    """
    fields: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if a.native is None:
            raise ValueError(f"the {name} split has no full-size films to pack")
        blobs = [_encode(x, size, quality) for x in a.native]
        fields[f"{name}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
        fields[f"{name}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        fields[f"{name}_mask"] = np.packbits(a.y.astype(bool), axis=-1)
        fields[f"{name}_label"] = a.label
        fields[f"{name}_has_mask"] = a.has_mask
        fields[f"{name}_source"] = a.source
        fields[f"{name}_format"] = a.file_format
        fields[f"{name}_ids"] = np.array(ids[name], dtype=str)
    meta = {
        "size": size,
        "quality": quality,
        "mask_size": int(next(iter(arrays.values())).y.shape[-1]),
    }
    fields["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **fields)  # the masks are mostly empty: they shrink
    total = buffer.tell()
    if budget_mb is not None and total > budget_mb * 2**20:
        raise ValueError(
            f"the pack would be {total / 2**20:.1f} MiB, over its budget of {budget_mb} MiB: "
            "use a lower quality or fewer films"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return PackReport(out, {n: len(a) for n, a in arrays.items()}, out.stat().st_size)


def unpack(path: str | Path, preprocess: PreprocessConfig) -> dict[str, Arrays]:
    """The pack's splits as :class:`Arrays`: ``native`` the stored films, ``x`` each one
    through :func:`~pneumo.inference.preprocess.model_image` (the serving path)."""
    out = {}
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        for name in SPLITS:
            if f"{name}_jpeg" not in z:
                continue
            data, offsets = z[f"{name}_jpeg"], z[f"{name}_offsets"]
            native = [_decode(data[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1)]
            mask = np.unpackbits(z[f"{name}_mask"], axis=-1, count=meta["mask_size"])
            if mask.shape[-1] != preprocess.size:
                raise ValueError(
                    f"the pack's masks are {meta['mask_size']} px, the model's input "
                    f"{preprocess.size} px: pack again for this model"
                )
            x = np.stack([model_image(n, preprocess) for n in native])
            out[name] = Arrays(
                x,
                mask.astype(np.uint8),
                z[f"{name}_label"],
                z[f"{name}_has_mask"],
                z[f"{name}_source"],
                z[f"{name}_format"],
                native,
            )
    return out


def pack_config(
    cfg,
    out: str | Path,
    size: int = 512,
    quality: int = 75,
    budget_mb: float | None = None,
    train_only: int | None = None,
    progress: bool = True,
) -> PackReport:
    """Pack the train and tune films of training config ``cfg`` (a
    :class:`~pneumo.training.config.TrainConfig`), with at most ``train_only`` of its
    train-only (pseudo-labelled) films, drawn with the config's seed."""
    from pneumo.training.data import cached_arrays, cached_native, split_samples

    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    data = split_samples(cfg)
    samples = dict(data.samples)
    extra = [s for s in samples["train"] if s.image_id in data.train_only]
    if train_only is not None and len(extra) > train_only:
        labelled = [s for s in samples["train"] if s.image_id not in data.train_only]
        keep = np.random.default_rng(cfg.seed).choice(len(extra), train_only, replace=False)
        samples["train"] = labelled + [extra[i] for i in sorted(keep)]
    arrays, ids = {}, {}
    for name in SPLITS:
        arrays[name] = cached_arrays(samples[name], data.table, pcfg, cfg.cache_dir, progress)
        arrays[name].native = cached_native(samples[name], cfg.native_size, cfg.cache_dir, progress)
        ids[name] = [s.image_id for s in samples[name]]
    return pack(arrays, ids, out, size, quality, budget_mb)
