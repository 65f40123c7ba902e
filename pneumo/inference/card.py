"""The model card: one typed record, written by packaging, read by the Predictor,
shown by the result page and rendered to a model folder's README.md.

A model folder holds ``model.json`` (this card) and ``weights.weights.h5``.
Cards written before model v2 (a gate on the ``min_top_pixels``-th highest
pixel, no calibration) are read as one ``balanced`` operating point on that
uncalibrated score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumo.errors import ModelLoadError
from pneumo.inference.calibration import Calibrator
from pneumo.inference.postprocess import OperatingPoint, PostProcess
from pneumo.inference.preprocess import PreprocessConfig

CARD = "model.json"
WEIGHTS = "weights.weights.h5"
INTENDED_USE = "Decision support for pneumothorax on chest radiographs; not a diagnosis."


@dataclass
class ModelCard:
    """Everything the weights need to be used and judged."""

    name: str
    architecture: dict[str, Any]
    preprocess: PreprocessConfig
    postprocess: PostProcess
    operating_points: dict[str, OperatingPoint]
    default_operating_point: str = "balanced"
    calibration: Calibrator | None = None
    tta: bool = False
    version: str = ""
    parameters: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    intended_use: str = INTENDED_USE
    chest_gate: dict[str, Any] | None = (
        None  # pneumo.inference.gate.AppearanceGate, fitted on its features
    )
    calibration_prevalence: float | None = None  # prevalence the probability is calibrated at
    # the review band's lowest probability (fitted so that few normal films fall in the band);
    # None: the band reaches down to the next operating point
    review_floor: float | None = None
    # how the model is served: the runtime chosen by measurement with its accuracy guard
    # (benchmarks/runtime_choice.py), which PNEUMO_RUNTIME=auto follows where it can run
    serving: dict[str, Any] | None = None

    def __post_init__(self):
        if self.default_operating_point not in self.operating_points:
            raise ValueError(
                f"default operating point {self.default_operating_point!r} is not "
                f"among {sorted(self.operating_points)}"
            )

    @property
    def probability_kind(self) -> str:
        """``probability`` when calibrated, otherwise ``score``."""
        return "probability" if self.calibration else "score"

    @property
    def calibrated_at(self) -> float | None:
        """The prevalence the probability is calibrated at: the calibration split's
        share of positives (read from the tune figures for cards that predate the field)."""
        if self.calibration is None:
            return None
        if self.calibration_prevalence is not None:
            return self.calibration_prevalence
        n, k = self.tune.get("n_images"), self.tune.get("n_positive")
        return k / n if n and k else None

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """The named operating point (the default when ``name`` is None)."""
        name = name or self.default_operating_point
        if name not in self.operating_points:
            raise ValueError(
                f"unknown operating point {name!r}; this model has "
                f"{', '.join(sorted(self.operating_points))}"
            )
        return self.operating_points[name]

    def source_figures(self, point: str | None = None) -> list[dict[str, Any]]:
        """The held-out validation figures of operating point ``point`` within each source
        (the headline: pooled figures mix sources whose label shares differ), each with
        its film count and 95 % bootstrap interval where the card has one.

        Returns ``[{"source", "figure", "value", "n", "ci"}, ...]``: sensitivity where a
        source has positives, specificity where it has negatives; [] for cards without
        per-source figures.
        """
        name = point or self.default_operating_point
        intervals = self.validation.get("ci95") or {}
        out = []
        for source, figures in sorted((self.validation.get("by_source") or {}).items()):
            at = (figures.get("operating_points") or {}).get(name) or {}
            for figure, count in (("sensitivity", "n_positive"), ("specificity", "n_negative")):
                value, n = at.get(figure), figures.get(count) or 0
                if value is None or not n:
                    continue
                ci = intervals.get(f"{source}.{name}.{figure}")
                out.append({"source": source, "figure": figure, "value": value, "n": n, "ci": ci})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "preprocess": self.preprocess.to_dict(),
            "postprocess": self.postprocess.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "operating_points": {k: v.to_dict() for k, v in self.operating_points.items()},
            "default_operating_point": self.default_operating_point,
            "tta": self.tta,
            "data": self.data,
            "tune": self.tune,
            "validation": self.validation,
            "training": self.training,
            "config": self.config,
            "extra": self.extra,
            "intended_use": self.intended_use,
            "chest_gate": self.chest_gate,
            "calibration_prevalence": self.calibration_prevalence,
            **({"review_floor": self.review_floor} if self.review_floor is not None else {}),
            **({"serving": self.serving} if self.serving is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        pp = d["postprocess"]
        if "operating_points" in d:
            points = {k: OperatingPoint.from_dict(k, v) for k, v in d["operating_points"].items()}
        else:  # before model v2: one gate on the uncalibrated score
            val = d.get("validation", {})
            points = {
                "balanced": OperatingPoint(
                    "balanced",
                    float(pp["top_threshold"]),
                    float(val.get("sensitivity", "nan")),
                    float(val.get("specificity", "nan")),
                    "the single gate of a pre-v2 card",
                )
            }
        cal = d.get("calibration")
        return cls(
            name=d["name"],
            architecture=d["architecture"],
            preprocess=PreprocessConfig.from_dict(d["preprocess"]),
            postprocess=PostProcess.from_dict(pp),
            operating_points=points,
            default_operating_point=d.get("default_operating_point", "balanced"),
            calibration=Calibrator.from_dict(cal) if cal else None,
            tta=bool(d.get("tta")),
            version=str(d.get("version", "")),
            parameters=d.get("parameters"),
            data=d.get("data", {}),
            tune=d.get("tune", {}),
            validation=d.get("validation", {}),
            training=d.get("training", {}),
            config=d.get("config", {}),
            extra=d.get("extra", {}),
            intended_use=d.get("intended_use", INTENDED_USE),
            chest_gate=d.get("chest_gate"),
            calibration_prevalence=d.get("calibration_prevalence"),
            review_floor=d.get("review_floor"),
            serving=d.get("serving"),
        )

    def write(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / CARD
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_nan_none))
        return path


def _nan_none(value):
    raise TypeError(f"not JSON serialisable: {value!r}")


def read_card(model_dir: str | Path) -> ModelCard:
    """Read and check a model folder's card; :class:`ModelLoadError` says what is wrong."""
    model_dir = Path(model_dir)
    card_path = model_dir / CARD
    if not model_dir.is_dir():
        raise ModelLoadError(f"Model folder not found: {model_dir}")
    if not card_path.exists():
        raise ModelLoadError(f"Model card {CARD} is missing in {model_dir}")
    if not (model_dir / WEIGHTS).exists():
        raise ModelLoadError(f"Weights file {WEIGHTS} is missing in {model_dir}")
    try:
        raw = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"Model card {card_path} is not valid JSON: {exc}") from exc
    for key in ("name", "architecture", "preprocess", "postprocess"):
        if key not in raw:
            raise ModelLoadError(f"Model card {card_path} lacks '{key}'")
    try:
        return ModelCard.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"Model card {card_path} is inconsistent: {exc}") from exc
