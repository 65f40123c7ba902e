"""One way to load a model: :class:`ModelOptions` says which model folder and how to run
it, :func:`load_predictor` places the device and loads it.

The web app's model holder, ``pneumo predict``/``reread``/``evaluate``, the Ray engine's
actors and the device scripts all load through here, so the device choice, the runtime,
the operating point, the site prevalence and the warm-up mean the same everywhere::

    predictor = load_predictor(ModelOptions(model_dir, device="cpu", threads=2))
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import ModelLoadError
from pneumo.inference import runtime as runtimes
from pneumo.inference.card import WEIGHTS, ModelCard, read_card
from pneumo.inference.device import (
    DEFAULT_DEVICE,
    Placement,
    check_device_choice,
    check_threads,
    configure_device,
    configured_backend,
    nvidia_driver_present,
)
from pneumo.inference.predictor import DEFAULT_MODEL_DIR, Predictor, check_use
from pneumo.inference.runtime import DEFAULT_RUNTIME, check_runtime
from pneumo.nets.outputs import FEATURES_OUTPUT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOptions:
    """Which model folder to load, and how to run it (the ``PNEUMO_*`` model settings and
    the command line's model flags, in one shape).

    Attributes:
        model_dir: the model folder (card and weights); default: the bundled model.
        device: ``auto``, ``cpu`` or ``gpu`` (``PNEUMO_DEVICE``, ``--device``).
        runtime: ``auto`` (the card's measured choice where it can run), ``keras`` or
            ``openvino`` (``PNEUMO_RUNTIME``, ``--runtime``).
        threads: CPU threads per operation (``PNEUMO_TF_THREADS``); ``None``: one per core.
        operating_point: one of the card's points (``None``: the card's).
        prevalence: the site prevalence the shown probability is re-based to
            (``PNEUMO_PREVALENCE``); ``None``: none.
        tta: flip test-time augmentation (``None``: the card's).
        warm_up: run the network once on a blank image while loading.

    Raises:
        ValueError: an unknown device or runtime, or a thread count below 1 (named).
    """

    model_dir: Path = DEFAULT_MODEL_DIR
    device: str = DEFAULT_DEVICE
    runtime: str = DEFAULT_RUNTIME
    threads: int | None = None
    operating_point: str | None = None
    prevalence: float | None = None
    tta: bool | None = None
    warm_up: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir))
        object.__setattr__(self, "device", check_device_choice(self.device))
        check_threads(self.threads)
        check_runtime(self.runtime)


def check_model(options: ModelOptions) -> ModelCard:
    """The model's card, checked against ``options`` before anything loads (the web
    service fails at start-up, with the reason, rather than in its loader thread).

    Raises:
        ModelLoadError: no card, or an operating point or prevalence the card cannot serve.
    """
    card = read_card(options.model_dir)
    check_use(card, options.operating_point, options.prevalence)
    return card


def load_predictor(options: ModelOptions = ModelOptions()) -> Predictor:
    """Place the model (:func:`~pneumo.inference.device.configure_device`), then load it
    (:meth:`Predictor.load`) as ``options`` say.

    Call it before anything imports Keras in this process: the device is chosen when the
    backend starts.

    Raises:
        DeviceError: ``device="gpu"`` and the backend sees no GPU, or the choice came
            after the backend had started on another device.
        ModelLoadError: the folder, its card or its weights could not be loaded.
    """
    kept = _from_kept_network(options)
    if kept is not None:
        return kept
    if not keras_installed():
        raise ModelLoadError(
            f"Keras is not installed here (the slim serving image), so only a model whose "
            f"OpenVINO network was converted beforehand can be served, and none is kept for "
            f"{options.model_dir} in {runtimes.cache_dir()} (PNEUMO_RUNTIME={options.runtime}, "
            f"PNEUMO_DEVICE={options.device}). Convert it into this cache with Keras "
            "installed (`pneumo convert-network --model DIR`; in Docker with the full image, "
            "`docker build --target full -t pneumo:full .`), or serve with that image."
        )
    placement = configure_device(options.threads, options.device)
    log.info(
        "Keras backend %s; the model goes on %s (device choice %s)",
        placement.backend,
        placement,
        options.device,
    )
    return Predictor.load(
        options.model_dir,
        warm_up=options.warm_up,
        operating_point=options.operating_point,
        runtime=options.runtime,
        prevalence=options.prevalence,
        tta=options.tta,
        placement=placement,
    )


def keras_installed() -> bool:
    """Whether Keras can be imported here (found, without importing it: importing starts
    its backend, which :func:`configure_device` must precede)."""
    if "keras" in sys.modules:
        return sys.modules["keras"] is not None
    return importlib.util.find_spec("keras") is not None


def _from_kept_network(options: ModelOptions) -> Predictor | None:
    """The model served by its kept OpenVINO conversion, without Keras or TensorFlow (a
    start in a fraction of a second instead of seconds, and a worker hundreds of MB
    smaller), where that is what :func:`load_predictor` would serve anyway: the runtime
    resolves to ``openvino`` on the CPU (asked for, or the card's choice under ``auto``
    with the TensorFlow backend), the device is ``cpu`` or ``auto`` without an NVIDIA
    driver, and the weights' conversion is in the cache. ``None`` otherwise: the model
    is built with Keras (and converted and kept, when OpenVINO serves it)."""
    if options.device == "gpu" or (options.device == "auto" and nvidia_driver_present()):
        return None
    weights = options.model_dir / WEIGHTS
    if not weights.exists():
        return None
    card = check_model(options)
    backend = configured_backend()
    choice = (card.serving or {}).get("runtime")
    if runtimes.resolve(options.runtime, choice, False, backend) != "openvino":
        return None
    runtime = runtimes.OpenVINORuntime.from_cache(
        runtimes.weights_key(weights), threads=options.threads
    )
    if runtime is None or (card.chest_gate and FEATURES_OUTPUT not in runtime.output_names):
        return None  # none kept, or kept without the features the chest gate reads
    predictor = Predictor(
        None,
        card,
        options.model_dir,
        options.operating_point,
        runtime,
        options.prevalence,
        options.tta,
        Placement("openvino", "cpu", threads=options.threads),  # no Keras backend runs
    )
    if options.warm_up:
        predictor.warm_up()
    log.info("the kept OpenVINO network serves the model on the CPU; Keras is not loaded")
    return predictor
