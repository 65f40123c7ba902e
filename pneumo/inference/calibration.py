"""Image-level probability: evidence from the mask, Platt calibration, reliability.

Pure numpy. :class:`Calibrator` maps the network's raw image-level outputs
(the image head's probability and/or the mask evidence, the ``k``-th highest
pixel probability) to a probability fitted on the tune split by logistic
regression on their logits (Platt scaling; with two inputs, a two-feature
logistic model). :func:`choose_calibrator` picks the inputs by cross-validated
log-loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

FEATURES = ("head", "evidence")
_EPS = 1e-6


def evidence(maps: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th highest pixel probability of each map (N, H, W) -> (N,)."""
    flat = np.asarray(maps, np.float32).reshape(len(maps), -1)
    k = max(1, min(int(k), flat.shape[1]))
    return np.partition(flat, -k, axis=1)[:, -k]


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    l2: float = 1e-2,
    iterations: int = 50,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method with a small L2 penalty on the weights.

    Args:
        x: (N, F) features; y: (N,) 0/1 labels; sample_weight: (N,) weights
            of each example's loss (default: all 1).

    Returns:
        ``(coef (F,), intercept)``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    a = np.hstack([x, np.ones((len(x), 1))])
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-a @ w))
        grad = a.T @ (sw * (p - y)) + penalty * w
        hess = (a * (sw * p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


@dataclass(frozen=True)
class Calibrator:
    """Raw image-level outputs -> calibrated probability. Stored in the model card."""

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    method: str = "platt"
    fitted_on: str = "tune"

    def __post_init__(self):
        bad = [f for f in self.features if f not in FEATURES]
        if bad or not self.features or len(self.coef) != len(self.features):
            raise ValueError(
                f"calibrator needs features from {FEATURES} and one coefficient "
                f"each, got {self.features} / {self.coef}"
            )

    def probability(self, head: np.ndarray | None, evidence_: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N,) from the head output (or None) and the evidence."""
        inputs = {"head": head, "evidence": evidence_}
        if "head" in self.features and head is None:
            raise ValueError("this calibrator needs the image head's output")
        z = self.intercept + sum(c * logit(inputs[f]) for f, c in zip(self.features, self.coef))
        return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))

    def to_dict(self) -> dict:
        return asdict(self) | {"features": list(self.features), "coef": list(self.coef)}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(
            tuple(d["features"]),
            tuple(float(c) for c in d["coef"]),
            float(d["intercept"]),
            d.get("method", "platt"),
            d.get("fitted_on", "tune"),
        )


def fit_calibrator(
    features: tuple[str, ...], head: np.ndarray | None, evidence_: np.ndarray, labels: np.ndarray
) -> Calibrator:
    """Fit a :class:`Calibrator` on the given inputs."""
    inputs = {"head": head, "evidence": evidence_}
    x = np.stack([logit(inputs[f]) for f in features], axis=1)
    coef, intercept = fit_logistic(x, labels)
    return Calibrator(tuple(features), tuple(float(c) for c in coef), intercept)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_calibrator(
    head: np.ndarray | None,
    evidence_: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    seed: int = 0,
) -> tuple[Calibrator, dict[str, float]]:
    """Pick the calibrator inputs with the lowest ``folds``-fold cross-validated log-loss.

    Returns:
        ``(calibrator fitted on all data, {candidate: cross-validated log-loss})``.
    """
    labels = np.asarray(labels, bool)
    candidates = [("evidence",)] + ([("head",), ("head", "evidence")] if head is not None else [])
    order = np.random.default_rng(seed).permutation(len(labels))
    fold_of = np.empty(len(labels), int)
    fold_of[order] = np.arange(len(labels)) % folds
    losses: dict[str, float] = {}
    for feats in candidates:
        p = np.zeros(len(labels))
        for k in range(folds):
            train, test = fold_of != k, fold_of == k
            cal = fit_calibrator(
                feats, None if head is None else head[train], evidence_[train], labels[train]
            )
            p[test] = cal.probability(None if head is None else head[test], evidence_[test])
        losses["+".join(feats)] = log_loss(p, labels)
    best = min(candidates, key=lambda f: losses["+".join(f)])
    return fit_calibrator(best, head, evidence_, labels), losses


@dataclass
class Reliability:
    """Reliability diagram data and the expected calibration error."""

    edges: list[float]
    mean_predicted: list[float | None]
    observed: list[float | None]
    counts: list[int]
    ece: float = field(default=float("nan"))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> Reliability:
    """Equal-width bins over [0, 1]; ECE = sum over bins of n_b / N * |observed - predicted|."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    mean_p, obs, counts, ece = [], [], [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        counts.append(n)
        if n:
            mp, ob = float(probs[sel].mean()), float(labels[sel].mean())
            ece += n / len(probs) * abs(ob - mp)
            mean_p.append(mp)
            obs.append(ob)
        else:
            mean_p.append(None)
            obs.append(None)
    return Reliability(
        [float(e) for e in edges], mean_p, obs, counts, float(ece) if len(probs) else float("nan")
    )
