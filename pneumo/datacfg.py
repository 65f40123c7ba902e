"""Data specification files (``configs/data_*.json``): where images, labels and the split live."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pneumo import dataset, rle

DEFAULT_DATA_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "data_siim.json"


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
        )

    def table(self) -> dict[str, list[str]]:
        return rle.read_rle_csv(self.rle_csv)

    def id_map(self) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for p in self.id_maps:
            if p.exists():
                mapping.update(dataset.read_id_map(p))
        return mapping

    def samples(self, table=None) -> tuple[dataset.IndexResult, list[dataset.Sample]]:
        """Index SIIM files and, when configured, add NIH negatives."""
        table = self.table() if table is None else table
        result = dataset.build_index(self.image_dirs, table,
                                     [p for p in self.id_maps if p.exists()])
        samples = list(result.samples)
        if self.nih_index and self.nih_index.exists() and self.nih_images:
            nih, _ = dataset.nih_samples(self.nih_index, self.nih_images)
            samples += nih
        return result, samples
