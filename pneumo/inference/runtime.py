"""The inference runtime seam: one ``predict(batch) -> (maps, head)`` behind a loader.

:class:`KerasRuntime` runs the Keras model (any backend); :class:`OpenVINORuntime`
converts the same weights to OpenVINO (the ``openvino`` package) and runs them on the
CPU at float32. The Predictor and the benchmarks pick one by name (``PNEUMO_RUNTIME``);
nothing else knows which is in use.

``auto`` (the default) serves what the model's card chose by measurement
(``serving.runtime``, from ``benchmarks/runtime_choice.py``: the fastest runtime whose
validation figures stay within the accuracy guard of Keras) when it can run here: OpenVINO
on the CPU when the package is installed; Keras otherwise and on a GPU. The converted
network is kept in a cache folder (keyed by the weights and the OpenVINO version), so
only the first start converts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from pneumo.nets.outputs import split_named

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "keras", "openvino")
#: The runtime used unless another is asked for (``PNEUMO_RUNTIME``).
DEFAULT_RUNTIME = "auto"


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported here."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def resolve(
    name: str, card_choice: str | None, on_gpu: bool = False, backend: str = "tensorflow"
) -> str:
    """The runtime that ``name`` means: itself, or for ``auto`` the card's measured choice
    where it can run (OpenVINO: installed, the model not placed on a GPU, and the Keras
    backend TensorFlow, whose saved model it converts), else ``keras``."""
    check_runtime(name)
    if name != "auto":
        return name
    if (
        card_choice == "openvino"
        and not on_gpu
        and backend == "tensorflow"
        and openvino_installed()
    ):
        return "openvino"
    return "keras"


def cache_dir() -> Path:
    """Where converted networks are kept: ``$XDG_CACHE_HOME/pneumo`` (by default
    ``~/.cache/pneumo``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pneumo"


def weights_key(path: Path) -> str:
    """A short digest of a weights file (the cache key of its converted network)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


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
        return _as_arrays(*split_named(self.model.output_names, self.model.predict_on_batch(x)))


def openvino_version() -> str:
    """The installed OpenVINO's version without its build suffix, e.g. ``2026.4.1``."""
    import openvino as ov  # lazy: the optional openvino extra

    return ov.__version__.split("-")[0]


def cached_network(cache_key: str) -> Path:
    """Where the network converted from the weights ``cache_key`` is kept: an OpenVINO IR
    (``.xml`` + ``.bin``) and its outputs' names (``.json``), keyed by the weights and
    the OpenVINO version."""
    return cache_dir() / f"openvino-{openvino_version()}-{cache_key}.xml"


class OpenVINORuntime:
    """The same network converted to OpenVINO (CPU, float32 inference precision).

    :meth:`from_model` converts a built Keras model (through a TensorFlow saved model);
    with a ``cache_key`` (e.g. :func:`weights_key` of the weights) the converted network
    is written to :func:`cache_dir` on first use and read from there afterwards (a start
    then skips the conversion, which takes seconds). :meth:`from_cache` reads a kept one
    without Keras at all: a server whose network is in the cache never imports Keras or
    TensorFlow. A cache that cannot be written or read is skipped with a log line, never
    an error."""

    def __init__(
        self, network, output_names: list[str], precision: str = "f32", threads: int | None = None
    ):
        import openvino as ov  # lazy: the optional openvino extra

        self.output_names = list(output_names)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:  # PNEUMO_TF_THREADS: the CPU threads per operation, whatever the runtime
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = ov.Core().compile_model(network, "CPU", config)
        self.name = f"openvino {openvino_version()} ({precision})"
        self.threads = threads

    @classmethod
    def from_model(
        cls,
        model,
        precision: str = "f32",
        cache_key: str | None = None,
        threads: int | None = None,
    ) -> "OpenVINORuntime":
        """Convert a built Keras model (weights loaded), or read its kept conversion."""
        import openvino as ov  # lazy: the optional openvino extra

        names = list(model.output_names)
        cached = cached_network(cache_key) if cache_key else None
        network = _read_kept(ov, cached) if cached is not None else None
        if network is None:
            with tempfile.TemporaryDirectory() as tmp:
                saved = Path(tmp) / "saved_model"
                model.export(str(saved), format="tf_saved_model", verbose=False)
                network = ov.convert_model(str(saved), input=[[-1, *model.input_shape[1:]]])
            if cached is not None:
                _keep(ov, network, names, cached)
        elif not cached.with_suffix(".json").exists():  # kept before the names were
            _keep_names(names, cached)
        return cls(network, names, precision, threads)

    @classmethod
    def from_cache(
        cls, cache_key: str, precision: str = "f32", threads: int | None = None
    ) -> "OpenVINORuntime | None":
        """The network kept for the weights ``cache_key`` (with its outputs' names), or
        ``None`` when none is kept (or it cannot be read: it is converted again)."""
        import openvino as ov  # lazy: the optional openvino extra

        cached = cached_network(cache_key)
        names = cached.with_suffix(".json")
        network = _read_kept(ov, cached) if names.exists() else None
        if network is None:
            return None
        try:
            output_names = json.loads(names.read_text())["output_names"]
            return cls(network, output_names, precision, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged cache converts again
            log.warning("the converted network in the cache is unusable: %s", exc)
            return None

    def predict(self, x: np.ndarray) -> Raw:
        result = self.compiled(np.ascontiguousarray(x, np.float32))
        return _as_arrays(
            *split_named(self.output_names, [result[port] for port in self.compiled.outputs])
        )


def _read_kept(ov, path: Path):
    """A kept network, or ``None`` when there is none or it cannot be read."""
    if not path.exists():
        return None
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged cache converts again
        log.warning("the converted network in the cache is unreadable: %s", exc)
        return None


def _keep(ov, converted, output_names: list[str], path: Path) -> None:
    """Write a converted network to ``path`` with its outputs' names beside it (every
    file renamed into place, the ``.xml`` last, so a reader never sees half of one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.xml")
        ov.save_model(converted, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        _keep_names(output_names, path)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not keep the converted network in %s: %s", path.parent, exc)


def _keep_names(output_names: list[str], path: Path) -> None:
    """Write the outputs' names of the network kept at ``path`` beside it."""
    try:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.json")
        tmp.write_text(json.dumps({"output_names": output_names}))
        os.replace(tmp, path.with_suffix(".json"))
    except OSError as exc:
        log.warning("could not keep the converted network's outputs in %s: %s", path.parent, exc)


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


def load(name: str, model, cache_key: str | None = None, threads: int | None = None) -> Runtime:
    """The runtime ``name`` (``keras`` or ``openvino``; see :func:`resolve` for ``auto``)
    for a built Keras model with its weights loaded."""
    check_runtime(name)
    if name == "auto":
        raise ValueError("resolve the runtime 'auto' first (runtime.resolve)")
    if name == "keras":
        return KerasRuntime(model)
    try:  # openvino, the only other one
        import openvino  # noqa: F401  # lazy: is the optional openvino extra installed?
    except ImportError as exc:
        raise ValueError(
            "PNEUMO_RUNTIME=openvino needs the openvino package (pip install -r requirements.txt)"
        ) from exc
    return OpenVINORuntime.from_model(model, cache_key=cache_key, threads=threads)


def as_runtime(model_or_runtime) -> Runtime:
    """A Runtime as it is, a Keras model wrapped in :class:`KerasRuntime`."""
    return (
        KerasRuntime(model_or_runtime) if hasattr(model_or_runtime, "layers") else model_or_runtime
    )
