"""Decoded model-size examples of labelled images, shared by training and evaluation.

:func:`load_example` decodes one sample through the serving path (read, then
:func:`~pneumo.inference.preprocess.model_image`) with its target mask;
:func:`decode_examples` decodes a list of them into :class:`Arrays`, which hold a split's
examples with their labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.data import dataset
from pneumo.inference.preprocess import PreprocessConfig, model_image, resize_target_mask
from pneumo.io import rle
from pneumo.io.imaging import read_image
from pneumo.progress import track


@dataclass
class Arrays:
    """Decoded model-size images of one split, with their targets."""

    x: np.ndarray  # uint8 (N, size, size)
    y: np.ndarray  # uint8 0/1 (N, size, size)
    label: np.ndarray  # bool (N,): image-level pneumothorax
    has_mask: np.ndarray  # bool (N,): y is ground truth (False: image label only)
    source: np.ndarray | None = None  # str (N,): data source of each image ("siim", "nih")
    file_format: np.ndarray | None = None  # str (N,): the file's format ("DICOM", "PNG", "JPEG")
    native: list[np.ndarray] | None = None  # uint8 images at their own size (capped), if loaded

    def __len__(self) -> int:
        return len(self.x)

    def groups(self, by: str) -> np.ndarray | None:
        """The groups that balanced sampling evens out within each class."""
        if self.source is None or by == "source" or self.file_format is None:
            return self.source
        return np.char.add(np.char.add(self.source, "/"), self.file_format)


def preprocess_config(preprocess: PreprocessConfig | int) -> PreprocessConfig:
    """A preprocessing config; a bare size means no canonical step."""
    return (
        preprocess
        if isinstance(preprocess, PreprocessConfig)
        else PreprocessConfig(size=int(preprocess))
    )


def load_example(
    sample: dataset.Sample, table: dict[str, list[str]], preprocess: PreprocessConfig | int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one sample to (uint8 model image size x size, uint8 0/1 mask size x size)."""
    pcfg = preprocess_config(preprocess)
    size = pcfg.size
    x = model_image(read_image(sample.path).pixels, pcfg)
    if sample.positive and sample.has_mask and sample.image_id in table:
        return x, resize_target_mask(rle.merge(table[sample.image_id]), size)
    return x, np.zeros((size, size), np.uint8)


def decode_examples(
    samples: list[dataset.Sample],
    table: dict[str, list[str]],
    preprocess: PreprocessConfig | int,
    progress: str | None = None,
) -> Arrays:
    """Every sample decoded by :func:`load_example`, with its labels (:func:`labelled`).

    ``progress``: a label for a progress display on stderr (``None``: none).
    """
    size = preprocess_config(preprocess).size
    xs = np.zeros((len(samples), size, size), np.uint8)
    ys = np.zeros_like(xs)
    indices = track(range(len(samples)), progress) if progress else range(len(samples))
    for i in indices:
        xs[i], ys[i] = load_example(samples[i], table, preprocess)
    return labelled(samples, xs, ys)


def labelled(samples: list[dataset.Sample], x: np.ndarray, y: np.ndarray) -> Arrays:
    """``x`` and ``y`` (in the order of ``samples``) with each sample's image label,
    mask flag, source and file format."""
    return Arrays(
        x,
        y,
        np.array([bool(s.positive) for s in samples], bool),
        np.array([s.has_mask for s in samples], bool),
        np.array([s.source for s in samples], dtype=str),
        np.array([s.format for s in samples], dtype=str),
    )
