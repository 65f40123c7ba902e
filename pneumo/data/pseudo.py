"""Pseudo-labels for unlabelled films (self-training): the teacher's confident negatives.

The SIIM films here are nearly all positive, so within SIIM a network has almost no
normal film to learn from. Unlabelled SIIM films read by a model (``pneumo predict
--scores``) become training negatives where the model's probability is below a
threshold; :func:`contamination` says how many true pneumothoraces such a set is
expected to hold.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pneumo.data.dataset import hash_fraction
from pneumo.io import rle


@dataclass(frozen=True)
class Selection:
    """Which films became negatives, out of how many read."""

    negatives: list[str]
    read: int

    @property
    def fraction(self) -> float:
        return len(self.negatives) / self.read if self.read else 0.0


def read_scores(path: str | Path) -> dict[str, float]:
    """``{ImageId: probability}`` from a scores CSV of ``pneumo predict``."""
    with open(path, newline="") as fh:
        return {row["ImageId"]: float(row["probability"]) for row in csv.DictReader(fh)}


def held_out(ids, fraction: float, seed: int = 2032) -> set[str]:
    """The films kept out of self-training (a fixed share, drawn by hashing each ImageId):
    never pseudo-labelled, they measure how often a model flags unlabelled films."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out share must be in [0, 1), got {fraction}")
    return {i for i in ids if hash_fraction(i, seed) < fraction}


def confident_negatives(
    scores: dict[str, float], below: float, exclude: set[str] = frozenset()
) -> Selection:
    """The films whose probability is under ``below``, in ImageId order, out of those
    not in ``exclude``."""
    if not 0.0 < below < 1.0:
        raise ValueError(f"the threshold must be between 0 and 1, got {below}")
    pool = {i: p for i, p in scores.items() if i not in exclude}
    return Selection(sorted(i for i, p in pool.items() if p < below), len(pool))


def contamination(selection: Selection, prevalence: float, missed: float) -> float:
    """Expected share of true positives among the selected negatives.

    ``prevalence``: the share of pneumothorax among the films read (SIIM stage 2:
    about 0.22); ``missed``: the teacher's share of positives that fall under the
    threshold (1 - its sensitivity there, measured on the tune split).
    """
    if not selection.negatives:
        return 0.0
    expected_positives = selection.read * prevalence * missed
    return min(1.0, expected_positives / len(selection.negatives))


def write_labels(path: str | Path, negatives: list[str]) -> None:
    """A SIIM ground-truth CSV in which every film has an empty mask."""
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["ImageId", "EncodedPixels"])
        out.writerows([i, rle.EMPTY] for i in negatives)
