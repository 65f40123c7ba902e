"""The inference runtime seam: one ``predict(batch) -> (maps, head)`` behind a loader.

:class:`KerasRuntime` runs the Keras model (any backend); :class:`OpenVINORuntime`
converts the same weights to OpenVINO at load time (the ``openvino`` extra) and runs
them on the CPU at float32, which measured faster than TensorFlow here with outputs
within 1e-5 (benchmarks/README.md). The Predictor and the benchmarks pick one by
name (``PNEUMO_RUNTIME``); nothing else knows which is in use.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

RUNTIMES = ("keras", "openvino")
#: The runtime used unless another is asked for (``PNEUMO_RUNTIME``).
DEFAULT_RUNTIME = "keras"


class Runtime(Protocol):
    """Runs the network on a batch of model input."""

    name: str

    def predict(self, x: np.ndarray) -> Raw:
        """(N, size, size, C) float32 -> mask probabilities, head and features (:class:`Raw`)."""


class KerasRuntime:
    """The Keras model through its compiled predict function."""

    def __init__(self, model):
        import keras  # lazy: importing Keras starts its backend, after configure_device

        self.model = model
        self.name = f"keras ({keras.config.backend()})"

    def predict(self, x: np.ndarray) -> Raw:
        # predict_on_batch traces once per input shape (a graph under TensorFlow, jit under
        # JAX): about 3x faster on CPU than an eager call
        from pneumo.nets.networks import split_named  # lazy: imports Keras (see __init__)

        return _as_arrays(*split_named(self.model.output_names, self.model.predict_on_batch(x)))


class OpenVINORuntime:
    """The same network converted to OpenVINO (CPU, float32 inference precision)."""

    def __init__(self, model, precision: str = "f32"):
        import openvino as ov  # lazy: the optional openvino extra

        shape = model.input_shape[1:]
        self.output_names = list(model.output_names)
        with tempfile.TemporaryDirectory() as tmp:
            saved = Path(tmp) / "saved_model"
            model.export(str(saved), format="tf_saved_model", verbose=False)
            converted = ov.convert_model(str(saved), input=[[-1, *shape]])
        self.compiled = ov.Core().compile_model(
            converted, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        )
        self.name = f"openvino {ov.__version__} ({precision})"

    def predict(self, x: np.ndarray) -> Raw:
        from pneumo.nets.networks import split_named  # lazy: imports Keras (see KerasRuntime)

        result = self.compiled(np.ascontiguousarray(x, np.float32))
        return _as_arrays(
            *split_named(self.output_names, [result[port] for port in self.compiled.outputs])
        )


class Raw(NamedTuple):
    """One batch's network output as float32 arrays."""

    maps: np.ndarray  # (N, size, size) mask probabilities
    head: np.ndarray | None  # (N,) image-level head output
    features: np.ndarray | None = None  # (N, F) pooled features, when the model exposes them


def _as_arrays(mask, head, features=None) -> Raw:
    """(N, size, size, 1) mask, (N, 1) head and (N, F) feature outputs as float32 arrays."""
    maps = np.asarray(mask, np.float32)[..., 0]
    return Raw(
        maps,
        None if head is None else np.asarray(head, np.float32).reshape(-1),
        None if features is None else np.asarray(features, np.float32),
    )


def check_runtime(name: str) -> str:
    """``name`` if it is one of :data:`RUNTIMES`, else ``ValueError`` naming it."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {list(RUNTIMES)}")
    return name


def load(name: str, model) -> Runtime:
    """The runtime ``name`` for a built Keras model with its weights loaded."""
    check_runtime(name)
    if name == "keras":
        return KerasRuntime(model)
    try:  # openvino, the only other one
        import openvino  # noqa: F401  # lazy: is the optional openvino extra installed?
    except ImportError as exc:
        raise ValueError(
            "PNEUMO_RUNTIME=openvino needs the openvino extra (pip install 'pneumo[openvino]')"
        ) from exc
    return OpenVINORuntime(model)


def as_runtime(model_or_runtime) -> Runtime:
    """A Runtime as it is, a Keras model wrapped in :class:`KerasRuntime`."""
    return (
        KerasRuntime(model_or_runtime) if hasattr(model_or_runtime, "layers") else model_or_runtime
    )
