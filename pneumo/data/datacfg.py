"""Data specification files (``configs/data_*.json``): where images, labels and the split live."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pneumo import paths
from pneumo.data import dataset
from pneumo.io import rle

DEFAULT_DATA_CONFIG = paths.default_data_config()


@dataclass(frozen=True)
class TrainOnly:
    """Films that only ever train (pseudo-labelled, ``pneumo pseudo-label``)."""

    images: Path
    rle_csv: Path
    origin: str = ""  # where the films come from (repository, commit, folder), for the card


@dataclass
class DataConfig:
    """Resolved data specification; every path is absolute."""

    image_dirs: list[Path]
    rle_csv: Path
    id_maps: list[Path] = field(default_factory=list)
    nih_index: Path | None = None
    nih_images: Path | None = None
    split: Path | None = None
    split_seed: int = 2026
    val_fraction: float = 0.2
    base_split: Path | None = None
    tune_fraction: float | None = None
    tune_seed: int = 2027
    nih_positives: bool = False
    #: more labelled images, e.g. the reviews a team exported (``pneumo export-reviews``):
    #: (image folder, SIIM RLE CSV) pairs
    extra_sources: list[tuple[Path, Path]] = field(default_factory=list)
    #: films that only ever train: pseudo-labelled (``pneumo pseudo-label``); they never
    #: enter the split file, tune or validation
    train_only: list[TrainOnly] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_DATA_CONFIG) -> "DataConfig":
        path = Path(path)
        raw = json.loads(path.read_text())
        base = path.resolve().parent

        def res(p):
            return (base / p).resolve() if p else None

        return cls(
            image_dirs=[res(p) for p in raw["image_dirs"]],
            rle_csv=res(raw["rle_csv"]),
            id_maps=[res(p) for p in raw.get("id_maps", [])],
            nih_index=res(raw.get("nih_index")),
            nih_images=res(raw.get("nih_images")),
            split=res(raw.get("split")),
            split_seed=int(raw.get("split_seed", 2026)),
            val_fraction=float(raw.get("val_fraction", 0.2)),
            base_split=res(raw.get("base_split")),
            tune_fraction=raw.get("tune_fraction"),
            tune_seed=int(raw.get("tune_seed", 2027)),
            nih_positives=bool(raw.get("nih_positives", False)),
            extra_sources=[
                (res(e["images"]), res(e["rle_csv"])) for e in raw.get("extra_sources", [])
            ],
            train_only=[
                TrainOnly(res(e["images"]), res(e["rle_csv"]), e.get("origin", ""))
                for e in raw.get("train_only", [])
            ],
        )

    def table(self) -> dict[str, list[str]]:
        """Every image's RLE rows: the SIIM CSV's, then each extra source's."""
        table = rle.read_rle_csv(self.rle_csv)
        for _, csv_path in self.extra_sources:
            table.update(rle.read_rle_csv(csv_path))
        return table

    def train_only_table(self) -> dict[str, list[str]]:
        """The train-only films' labels (kept apart, so they never reach the split)."""
        table: dict[str, list[str]] = {}
        for source in self.train_only:
            table.update(rle.read_rle_csv(source.rle_csv))
        return table

    def id_map(self) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for p in self.id_maps:
            if p.exists():
                mapping.update(dataset.read_id_map(p))
        return mapping

    def samples(self, table=None) -> tuple[dataset.IndexResult, list[dataset.Sample]]:
        """Index SIIM files and, when configured, add NIH negatives."""
        table = self.table() if table is None else table
        result = dataset.build_index(
            self.image_dirs + [d for d, _ in self.extra_sources],
            table,
            [p for p in self.id_maps if p.exists()],
        )
        samples = list(result.samples)
        if self.nih_index and self.nih_index.exists() and self.nih_images:
            nih, _ = dataset.nih_samples(self.nih_index, self.nih_images, self.nih_positives)
            samples += nih
        return result, samples

    def train_only_samples(self, table=None) -> list[dataset.Sample]:
        """The train-only films that have a label in their CSVs (a folder may hold more);
        ``table``: :meth:`train_only_table`, when the caller has read it already.

        Raises ``FileNotFoundError`` when a folder is missing: they are put in place at
        training set-up (see ``scripts/siim_stage2.sh``), and training without them
        would silently be another recipe.
        """
        missing = [str(s.images) for s in self.train_only if not s.images.exists()]
        if missing:
            raise FileNotFoundError(f"train-only images missing: {', '.join(missing)}")
        if not self.train_only:
            return []
        table = self.train_only_table() if table is None else table
        return dataset.build_index([s.images for s in self.train_only], table).samples

    def make_split(self, samples: list[dataset.Sample]) -> dict[str, str]:
        """The split this configuration defines (what ``pneumo index --write`` writes).

        Without ``base_split``: the stratified train/val split of
        :func:`pneumo.data.dataset.assign_split`. With it: that committed split, and
        a ``tune`` split carved from its training part (and its new samples).
        """
        if self.base_split is None:
            return dataset.assign_split(samples, self.val_fraction, self.split_seed)
        if not self.tune_fraction:
            raise ValueError("a data config with base_split needs tune_fraction")
        return dataset.carve_tune(
            samples, dataset.read_split(self.base_split), float(self.tune_fraction), self.tune_seed
        )
