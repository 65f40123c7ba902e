"""Is this a frontal chest radiograph? The gate in front of every verdict.

A pneumothorax model asked about a photograph, a CT slice, a lateral film or
a stripe pattern still answers; its answer means nothing. The gate refuses
such inputs with a reason instead of a verdict:

1. **DICOM header** (where the tags are present): a Modality that is not a
   projection radiograph (CT, MR, US, NM, ...), a Body Part Examined that is
   not the chest, a lateral or decubitus View Position. Checked before the
   model runs.
2. **Colour**: a PNG/JPEG whose pixels carry colour (a photograph, a
   screenshot), measured by the reader before it turns the image grey.
3. **Appearance**: a logistic model on the network's own pooled deep
   features (the ones its image head reads, :data:`pneumo.nets.networks.FEATURES_LAYER`),
   fitted by ``scripts/fit_chest_gate.py`` on the training and tune splits'
   chest films against non-chest images that packages ship and synthetic
   patterns (:mod:`pneumo.training.gate_data`). It lives in the model card
   (``chest_gate``), since the features belong to those weights. Its
   threshold sits ``margin`` log-odds below the lowest score of any chest
   film it was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.errors import NotChestXrayError
from pneumo.inference.calibration import fit_logistic
from pneumo.io.imaging import DisplayMetadata

#: Projection radiography modalities (and secondary captures, which say nothing).
RADIOGRAPHY_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})
#: View Position (0018,5101) values of lateral and decubitus views.
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"})
#: Body Part Examined (0018,0015) words that mean the chest.
CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TORSO", "TRUNK")
#: Mean colour saturation (0-255 scale) above which a raster image is a colour picture;
#: grey films saved as colour JPEGs measure below 3.
MAX_CHROMA = 12.0
APPEARANCE_REASON = "the image does not look like a frontal chest radiograph"


def metadata_reason(meta: DisplayMetadata) -> str | None:
    """Why the file's header or colour says this is not a frontal chest radiograph."""
    if meta.modality and meta.modality.upper() not in RADIOGRAPHY_MODALITIES:
        return f"Modality (0008,0060) is {meta.modality}, not a radiograph"
    if meta.body_part and not any(w in meta.body_part.upper() for w in CHEST_WORDS):
        return f"Body Part Examined (0018,0015) is {meta.body_part}, not the chest"
    if meta.view_position and meta.view_position.upper() in LATERAL_VIEWS:
        return f"View Position (0018,5101) is {meta.view_position}: a lateral view"
    if meta.chroma > MAX_CHROMA:
        return "it is a colour image (a photograph or a screenshot?)"
    return None


def refuse(reason: str) -> NotChestXrayError:
    """The error every entry point shows: "not analysed" with the reason."""
    return NotChestXrayError(f"Not analysed: not a frontal chest X-ray ({reason}).")


@dataclass(frozen=True)
class AppearanceGate:
    """Standardisation, logistic weights and threshold on pooled network features."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    info: dict

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Log-odds that each row of ``features`` (N, F) is a frontal chest radiograph."""
        f = np.atleast_2d(np.asarray(features, np.float64))
        if f.shape[1] != len(self.mean):
            raise ValueError(f"the gate expects {len(self.mean)} features, got {f.shape[1]}")
        return ((f - self.mean) / self.scale) @ self.coef + self.intercept

    def passes(self, features: np.ndarray) -> np.ndarray:
        """Bool (N,): which rows look like chest films."""
        return self.scores(features) >= self.threshold

    def to_dict(self) -> dict:
        return {
            "mean": [round(float(v), 6) for v in self.mean],
            "scale": [round(float(v), 6) for v in self.scale],
            "coef": [round(float(v), 6) for v in self.coef],
            "intercept": self.intercept,
            "threshold": self.threshold,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "AppearanceGate":
        return cls(
            np.asarray(d["mean"], np.float64),
            np.asarray(d["scale"], np.float64),
            np.asarray(d["coef"], np.float64),
            float(d["intercept"]),
            float(d["threshold"]),
            dict(d.get("info", {})),
        )


def fit(
    chest: np.ndarray, other: np.ndarray, margin: float = 1.0, l2: float = 10.0
) -> AppearanceGate:
    """Fit the appearance gate: chest-film features (N, F) against other images' (M, F).

    Both classes weigh the same in the loss; the threshold is the lowest
    chest score minus ``margin``, so every chest film it was fitted on passes.
    """
    chest, other = np.asarray(chest, np.float64), np.asarray(other, np.float64)
    x = np.vstack([chest, other])
    y = np.r_[np.ones(len(chest)), np.zeros(len(other))]
    mean, scale = chest.mean(0), chest.std(0) + 1e-6
    weight = np.where(y == 1, 0.5 / len(chest), 0.5 / len(other)) * len(y)
    coef, intercept = fit_logistic((x - mean) / scale, y, l2=l2, sample_weight=weight)
    gate = AppearanceGate(mean, scale, coef, intercept, 0.0, {})
    lowest = float(gate.scores(chest).min())
    return AppearanceGate(
        mean,
        scale,
        coef,
        intercept,
        lowest - margin,
        {
            "chest_images": len(chest),
            "other_images": len(other),
            "lowest_chest_score": round(lowest, 4),
            "margin": margin,
            "l2": l2,
        },
    )
