"""Training configuration: everything a run needs, saved inside the model card."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
BALANCE_BY = ("source", "source_format")
CHECKPOINT_BY = ("pooled", "worst_source")


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
    # File-encoding augmentation at the image's own resolution, before the resize to
    # model size, applied to both classes alike so that compression artefacts and
    # resolution carry no information about the label (see :mod:`pneumo.training.encode`).
    jpeg: float = 0.0  # probability of a JPEG round trip
    jpeg_quality: tuple[int, int] = (30, 95)
    resample: float = 0.0  # probability of a down/up-scale round trip
    resample_range: tuple[float, float] = (0.4, 0.9)
    blur: float = 0.0  # probability of a Gaussian blur (sigma 0.3-1.2 px)
    sharpen: float = 0.0  # probability of an unsharp mask
    noise: float = 0.0  # probability of Gaussian noise (sd 1-4 grey levels)

    def __post_init__(self):
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(
                f"jpeg_quality must be 1 <= low <= high <= 100, got {self.jpeg_quality}"
            )
        lo, hi = self.resample_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"resample_range must be 0 < low <= high <= 1, got {self.resample_range}"
            )

    @property
    def encodes(self) -> bool:
        """Whether any augmentation works at the image's own resolution."""
        return any(p > 0 for p in (self.jpeg, self.resample, self.blur, self.sharpen, self.noise))


@dataclass
class Consistency:
    """Pairs of one film at two pixel sizes, trained to read alike.

    With ``weight`` > 0 each batch holds ``batch_size / 2`` films, each twice:
    as augmented, and the same (same augmentation) after its full-size pixels were
    area-downscaled by a factor in ``down`` or bicubic-upscaled by one in ``up``
    (``down_share`` of the pairs go down). The loss adds ``weight`` x the squared
    logit gap between the two readings of the image-level output, and
    ``evidence_weight`` (``None``: ``weight``) x that of the mask evidence, the
    resized view moving towards the original's.
    """

    weight: float = 0.0
    evidence_weight: float | None = None
    down: tuple[float, float] = (0.45, 0.75)
    up: tuple[float, float] = (1.5, 2.5)
    down_share: float = 0.5
    evidence_pixels: int = 100  # at 384 px, as the card's postprocess counts them
    reference_size: int = 384

    def __post_init__(self):
        if self.weight < 0 or (self.evidence_weight or 0.0) < 0:
            raise ValueError(
                f"consistency weights must be >= 0, got {self.weight}, {self.evidence_weight}"
            )
        lo, hi = self.down
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"consistency down must be 0 < low <= high <= 1, got {self.down}")
        lo, hi = self.up
        if not 1.0 <= lo <= hi <= 4.0:
            raise ValueError(f"consistency up must be 1 <= low <= high <= 4, got {self.up}")
        if not 0.0 <= self.down_share <= 1.0:
            raise ValueError(f"consistency down_share must be in [0, 1], got {self.down_share}")

    @property
    def on(self) -> bool:
        return self.weight > 0

    @property
    def mask_weight(self) -> float:
        return self.weight if self.evidence_weight is None else self.evidence_weight


@dataclass
class TrainConfig:
    """A training run, read from ``configs/train_*.json``.

    ``encoder_weights`` names an ImageNet weight file for the first encoder
    (``pneumo fetch-encoder`` puts them under ``.cache/encoders/``); it is
    read once when the network is built for training and never by serving.
    ``precision`` ``"auto"`` means ``mixed_float16`` on a GPU and float32 on
    a CPU; ``mixed_bfloat16`` pays on CPUs with AVX-512 BF16.
    """

    architecture: dict[str, Any] = field(
        default_factory=lambda: {
            "name": "double_unet",
            "args": {"input_size": 256, "depth": 4, "width": 0.25, "channels": 1},
        }
    )
    preprocess: dict[str, Any] = field(default_factory=lambda: {"size": 256, "channels": 1})
    data: str = "configs/data_siim_v2.json"
    batch_size: int = 8
    epochs: int = 20
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_epochs: int = 0
    encoder_lr_factor: float = 1.0
    loss: str = "bce_dice"
    deep_supervision: list[float] = field(default_factory=lambda: [0.5, 1.0])
    image_loss_weight: float = 0.5
    positive_fraction: float = 0.5
    source_balance: float = 0.0
    balance_by: str = "source"  # "source" or "source_format": the groups source_balance evens out
    native_size: int = 1024  # cap of the full-size image cache used by encoding augmentation
    tune_encodings: list[str] = field(default_factory=lambda: ["original"])
    # the AUC in the checkpoint key: pooled, or the worst of the AUCs within each source
    checkpoint_by: str = "pooled"
    augment: dict[str, Any] = field(default_factory=lambda: asdict(Augment()))
    consistency: dict[str, Any] = field(default_factory=lambda: asdict(Consistency()))
    early_stopping_patience: int = 8
    tta: bool = True
    report_validation: bool = True  # False for pilots: the validation split is for the final card
    tune_prevalence: float = 0.5
    seed: int = 2026
    init_weights: str | None = None
    encoder_weights: str | None = None
    precision: str = "auto"
    max_seconds: float | None = None
    max_train: int | None = None
    max_val: int | None = None
    cache_dir: str = ".cache"
    # a packed training set (pneumo pack, for a GPU machine): train and tune come from it
    # instead of the data config's files, and the run writes checkpoints only (the model
    # folder is made from them by `pneumo finalize`, which reads the real files)
    packed: str | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS + ("auto",):
            raise ValueError(
                f"precision must be one of {list(PRECISIONS) + ['auto']}, got {self.precision!r}"
            )
        if self.balance_by not in BALANCE_BY:
            raise ValueError(
                f"balance_by must be one of {list(BALANCE_BY)}, got {self.balance_by!r}"
            )
        if self.checkpoint_by not in CHECKPOINT_BY:
            raise ValueError(
                f"checkpoint_by must be one of {list(CHECKPOINT_BY)}, got {self.checkpoint_by!r}"
            )
        if self.pairs.on and self.batch_size % 2:
            raise ValueError(f"consistency pairs need an even batch_size, got {self.batch_size}")
        if not 0.0 < self.encoder_lr_factor <= 1.0:
            raise ValueError(f"encoder_lr_factor must be in (0, 1], got {self.encoder_lr_factor}")

    @property
    def pairs(self) -> Consistency:
        """The ``consistency`` entry, read."""
        return Consistency(**self.consistency)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        raw = json.loads(Path(path).read_text())
        unknown = set(raw) - set(cls.__dataclass_fields__) - {"_comment"}
        if unknown:
            raise ValueError(f"unknown keys in {Path(path).name}: {sorted(unknown)}")
        raw.pop("_comment", None)
        return cls(**raw)
