"""Dataset index: match image files to SIIM ImageIds, add NIH negatives, split.

* DICOM files are identified by their SOPInstanceUID (SIIM's ImageId).
* PNG/JPEG files by their file stem, or through an id map: any CSV with an
  ``ImageId`` column and a column of file names or paths (for example
  ``amarshrma/Deployment/train.csv`` or the thermistokles
  ``stage_1_*_images.csv``), matched on the file's base name.
* Several copies of one ImageId are collapsed to one sample (DICOM first,
  then lossless PNG, then JPEG; larger images first).
* NIH ChestX-ray14 negatives (image-level labels only) become samples with
  an empty mask; their split is by patient so no patient straddles splits.

The split is deterministic: each group key is hashed with a seed and the
lowest ``val_fraction`` of every stratum (positive / negative / source)
goes to validation.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pydicom
from PIL import Image

from pneumo.io import rle
from pneumo.io.imaging import read_image

IMAGE_SUFFIXES = {
    ".dcm": "DICOM",
    ".dicom": "DICOM",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}
_FORMAT_RANK = {"DICOM": 0, "PNG": 1, "JPEG": 2}


@dataclass(frozen=True)
class Sample:
    """One labelled (or unlabelled) image file."""

    image_id: str
    path: str
    format: str
    positive: bool | None
    source: str = "siim"
    group: str = ""
    has_mask: bool = True  # False: an image-level label only (NIH positives)

    @property
    def split_key(self) -> str:
        return self.group or self.image_id


@dataclass
class IndexResult:
    """What :func:`build_index` found."""

    samples: list[Sample] = field(default_factory=list)
    unlabelled: list[Sample] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    duplicate_files: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "matched_images": len(self.samples),
            "positives": sum(1 for s in self.samples if s.positive),
            "negatives": sum(1 for s in self.samples if s.positive is False),
            "unlabelled_images": len(self.unlabelled),
            "unmatched_files": len(self.unmatched),
            "duplicate_files": self.duplicate_files,
        }


def iter_image_files(folders: Iterable[str | Path]) -> list[Path]:
    """All DICOM/PNG/JPEG files under ``folders`` (recursive), sorted."""
    files: set[Path] = set()
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            files.add(folder)
            continue
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.add(path)
    return sorted(files)


def read_id_map(path: str | Path) -> dict[str, str]:
    """Read a CSV mapping file names to ImageIds, keyed by base name.

    The ImageId column is the one named ``ImageId`` (any case); the file
    column is the first other column whose values end in an image suffix.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    columns = list(rows[0])
    id_col = next((c for c in columns if c.strip().lower() == "imageid"), None)
    if id_col is None:
        raise ValueError(f"{Path(path).name} has no ImageId column (columns: {columns})")
    file_cols = [
        c for c in columns if c != id_col and Path(str(rows[0][c])).suffix.lower() in IMAGE_SUFFIXES
    ]
    if not file_cols:
        raise ValueError(f"{Path(path).name} has no column of image file names")
    mapping: dict[str, str] = {}
    for row in rows:
        for col in file_cols:
            name = Path(str(row[col]).strip()).name
            if name:
                mapping[name] = row[id_col].strip()
    return mapping


def dicom_image_id(path: str | Path) -> str | None:
    """SOPInstanceUID of a DICOM file, read without its pixel data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uid = ds.get("SOPInstanceUID")
        except Exception:  # noqa: BLE001 - an unreadable file has no id; the index skips it
            return None
    return str(uid).strip() if uid else None


def file_image_id(path: Path, id_map: dict[str, str]) -> str | None:
    """ImageId for one file: DICOM UID, else id-map entry, else the file stem."""
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt == "DICOM":
        return dicom_image_id(path)
    if path.name in id_map:
        return id_map[path.name]
    return path.stem


def _image_size(path: Path, fmt: str) -> int:
    if fmt == "DICOM":
        return 1024 * 1024
    with Image.open(path) as img:
        return img.size[0] * img.size[1]


def build_index(
    folders: Iterable[str | Path], table: dict[str, list[str]], id_maps: Iterable[str | Path] = ()
) -> IndexResult:
    """Match every image under ``folders`` to the ground-truth ``table``.

    Args:
        folders: folders (searched recursively) or single files.
        table: ``{ImageId: [rle, ...]}`` from :func:`pneumo.io.rle.read_rle_csv`.
        id_maps: CSVs mapping file names to ImageIds.

    Returns:
        An :class:`IndexResult`; ``samples`` hold one entry per labelled ImageId.
    """
    id_map: dict[str, str] = {}
    for path in id_maps:
        id_map.update(read_id_map(path))
    result = IndexResult()
    by_id: dict[str, list[Sample]] = {}
    for path in iter_image_files(folders):
        fmt = IMAGE_SUFFIXES[path.suffix.lower()]
        image_id = file_image_id(path, id_map)
        if image_id is None:
            result.unmatched.append(str(path))
            continue
        positive = rle.is_positive(table[image_id]) if image_id in table else None
        if positive is None and fmt != "DICOM":
            result.unmatched.append(str(path))
            continue
        by_id.setdefault(image_id, []).append(
            Sample(image_id=image_id, path=str(path), format=fmt, positive=positive)
        )
    for image_id in sorted(by_id):
        copies = sorted(
            by_id[image_id],
            key=lambda s: (_FORMAT_RANK[s.format], -_image_size(Path(s.path), s.format), s.path),
        )
        result.duplicate_files += len(copies) - 1
        best = copies[0]
        (result.samples if best.positive is not None else result.unlabelled).append(best)
    return result


def nih_samples(
    index_csv: str | Path, images_dir: str | Path, positives: bool = False
) -> tuple[list[Sample], int]:
    """NIH ChestX-ray14 images as samples: negatives with an empty mask.

    An image is positive when its NIH label says Pneumothorax or the Google
    2019 adjudication says positive. Positives have no mask: with
    ``positives`` they are returned with ``has_mask=False`` (they can train
    an image-level head only), otherwise they are left out.

    Returns:
        ``(samples present on disk, number of positives present)``.
    """
    images_dir = Path(images_dir)
    samples, n_pos = [], 0
    with open(index_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            path = images_dir / row["image_index"]
            if not path.exists():
                continue
            positive = row["pneumothorax"] == "1" or row.get("google2019_pneumothorax") == "1"
            n_pos += positive
            if positive and not positives:
                continue
            samples.append(
                Sample(
                    image_id=f"nih:{row['image_index']}",
                    path=str(path),
                    format="PNG",
                    positive=positive,
                    source="nih",
                    group=f"nih-patient:{row['patient_id']}",
                    has_mask=not positive,
                )
            )
    return samples, n_pos


def hash_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed`` (the splits' deterministic draw)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def assign_split(
    samples: Iterable[Sample], val_fraction: float = 0.2, seed: int = 2026
) -> dict[str, str]:
    """Deterministic stratified split: ``{image_id: "train" | "val"}``.

    Samples are grouped by ``split_key`` (ImageId, or patient for NIH); in
    every (source, positive) stratum the groups with the lowest seeded hash
    make up ``val_fraction`` of that stratum.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    strata: dict[tuple, dict[str, list[Sample]]] = {}
    for s in samples:
        strata.setdefault((s.source, bool(s.positive)), {}).setdefault(s.split_key, []).append(s)
    split: dict[str, str] = {}
    for groups in strata.values():
        keys = sorted(groups, key=lambda k: hash_fraction(k, seed))
        n_val = int(round(len(keys) * val_fraction))
        for i, key in enumerate(keys):
            for s in groups[key]:
                split[s.image_id] = "val" if i < n_val else "train"
    return split


def carve_tune(
    samples: Iterable[Sample], base: dict[str, str], fraction: float, seed: int
) -> dict[str, str]:
    """Add a ``tune`` split carved from training, keeping ``val`` exactly as in ``base``.

    A group (ImageId, or NIH patient) goes to ``tune`` when its seeded hash
    falls under ``fraction``, so a patient never straddles train and tune.
    Samples missing from ``base`` (e.g. NIH positives added later) follow
    their patient's split; one whose patient is in ``val`` becomes
    ``excluded`` so validation stays unchanged.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"tune fraction must be in (0, 1), got {fraction}")
    samples = list(samples)
    in_val = {s.split_key for s in samples if base.get(s.image_id) == "val"}
    group_split = {
        s.split_key: "val" if s.split_key in in_val else base[s.image_id]
        for s in samples
        if s.image_id in base
    }
    split: dict[str, str] = {}
    for s in samples:
        where = base.get(s.image_id, group_split.get(s.split_key, "train"))
        if where == "val":
            split[s.image_id] = "val" if s.image_id in base else "excluded"
        else:
            split[s.image_id] = "tune" if hash_fraction(s.split_key, seed) < fraction else "train"
    return split


def write_split(path: str | Path, samples: Iterable[Sample], split: dict[str, str]) -> None:
    """Write ``image_id,split,positive,source,group`` rows, sorted by ImageId."""
    rows = sorted(samples, key=lambda s: s.image_id)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "split", "positive", "source", "group"])
        for s in rows:
            writer.writerow(
                [s.image_id, split[s.image_id], int(bool(s.positive)), s.source, s.split_key]
            )


def read_split(path: str | Path) -> dict[str, str]:
    """Read a committed split file into ``{image_id: split}``."""
    with open(path, newline="") as fh:
        return {row["image_id"]: row["split"] for row in csv.DictReader(fh)}


def pixel_fingerprint(pixels: np.ndarray) -> bytes:
    """A 16x16 average-hash of an image, stable across re-encoding and resizing."""
    small = cv2.resize(pixels, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.packbits(small > small.mean()).tobytes()


def cross_split_pixel_duplicates(
    samples: list[Sample], split: dict[str, str], max_hamming: int = 6
) -> list[tuple[str, str]]:
    """Pairs of ImageIds in different splits whose images look identical.

    Used to check that no validation image reaches training through a copy
    under another name. Returns ``[(train_id, val_id), ...]``.
    """
    prints = {}
    for s in samples:
        bits = np.unpackbits(
            np.frombuffer(pixel_fingerprint(read_image(s.path).pixels), dtype=np.uint8)
        )
        prints[s.image_id] = bits
    val = [i for i in prints if split.get(i) == "val"]
    train = [i for i in prints if split.get(i) in ("train", "tune")]
    if not val or not train:
        return []
    v = np.stack([prints[i] for i in val]).astype(np.int16)
    t = np.stack([prints[i] for i in train]).astype(np.int16)
    pairs = []
    for j, row in enumerate(v):
        dist = np.abs(t - row).sum(axis=1)
        for k in np.flatnonzero(dist <= max_hamming):
            pairs.append((train[k], val[j]))
    return pairs


def summarise(samples: Iterable[Sample], split: dict[str, str]) -> dict[str, Counter]:
    """Counts per split of positives/negatives by source."""
    out: dict[str, Counter] = {}
    for s in samples:
        key = f"{s.source}_{'pos' if s.positive else 'neg'}"
        out.setdefault(split.get(s.image_id, "none"), Counter())[key] += 1
    return out
