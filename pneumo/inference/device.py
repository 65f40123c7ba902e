"""Where the model runs, under any Keras backend (TensorFlow, JAX, torch).

:func:`configure_device` runs once per process, before Keras is imported (the
app's model loader, the device check): it applies the ``PNEUMO_DEVICE`` choice
(``auto``: the GPU when the backend sees one; ``cpu``: the CPU even when a GPU
is there; ``gpu``: the GPU or an error), takes GPU memory lazily (TensorFlow's
memory growth, JAX without its default 75 % preallocation; torch's caching
allocator is lazy already) and says where the model will run, e.g.
``GPU 0: NVIDIA H100 80GB HBM3 (jax)`` or ``CPU (tensorflow, 2 threads)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass

from pneumo.errors import ModelLoadError

log = logging.getLogger(__name__)

#: The values ``PNEUMO_DEVICE`` may take.
DEVICE_CHOICES = ("auto", "cpu", "gpu")
#: The device choice unless another is asked for (``PNEUMO_DEVICE``).
DEFAULT_DEVICE = "auto"

#: Lines TensorFlow's C++ runtime prints on every start-up of a machine without an
#: NVIDIA driver: expected there, so they are dropped; every other line is kept.
EXPECTED_WITHOUT_GPU = (
    "failed call to cuInit",
    "Could not find cuda drivers",
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "rebuild TensorFlow with the appropriate compiler flags",
    "This TensorFlow binary is optimized to use available CPU",
)


class DeviceError(ModelLoadError):
    """The device asked for cannot be used (``PNEUMO_DEVICE=gpu`` and no GPU seen)."""


@dataclass(frozen=True)
class Placement:
    """Where the model runs: the backend, CPU or GPU, and the GPU's index and name."""

    backend: str
    kind: str  # "cpu" or "gpu"
    index: int | None = None  # GPU index within the backend's own numbering
    name: str | None = None  # GPU model name, e.g. "NVIDIA H100 80GB HBM3"
    threads: int | None = None  # CPU threads per operation, when capped

    def __str__(self) -> str:
        if self.kind == "gpu":
            return f"GPU {self.index}: {self.name} ({self.backend})"
        if self.threads is None:
            return f"CPU ({self.backend})"
        return f"CPU ({self.backend}, {self.threads} thread{'s' if self.threads > 1 else ''})"


def configured_backend() -> str:
    """The Keras backend this process would start, read as Keras reads it but without
    importing Keras: ``KERAS_BACKEND``, else ``backend`` in ``$KERAS_HOME/keras.json``
    (by default ``~/.keras``), else ``tensorflow``."""
    import json

    if sys.modules.get("keras") is not None:  # started already: the one it started
        return sys.modules["keras"].config.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as fh:
            return str(json.load(fh).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def nvidia_driver_present() -> bool:
    """An NVIDIA kernel driver is loaded (the CUDA runtime could find a GPU)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


@contextlib.contextmanager
def quiet_gpu_probe():
    """Drop TensorFlow's expected GPU-probe noise from stderr on machines without an
    NVIDIA driver. The C++ runtime writes to file descriptor 2 directly, so the
    descriptor is redirected for the block and every other line is written back."""
    if nvidia_driver_present():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode(errors="replace").splitlines(True)
                if not any(p in line for p in EXPECTED_WITHOUT_GPU)
            ]
            if kept:
                os.write(2, "".join(kept).encode())


def check_device_choice(device: str) -> str:
    """``device`` lower-cased if it is one of :data:`DEVICE_CHOICES`, else ``ValueError``."""
    choice = str(device).strip().lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(
            f"PNEUMO_DEVICE must be one of {', '.join(DEVICE_CHOICES)}, got {device!r}"
        )
    return choice


def check_threads(threads) -> None:
    """``ValueError`` unless ``threads`` is ``None`` or a whole number of at least 1."""
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"PNEUMO_TF_THREADS must be a whole number of at least 1, got {threads!r}")


def _prepare_environment(device: str) -> None:
    """Settings the backends read when they start (so: before Keras is imported).

    They are harmless to the backends that do not read them: JAX reads
    ``JAX_PLATFORMS`` and ``XLA_PYTHON_CLIENT_PREALLOCATE``, Keras' torch
    backend ``KERAS_TORCH_DEVICE``.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["KERAS_TORCH_DEVICE"] = "cpu"


def configure_device(threads: int | None = None, device: str = "auto") -> Placement:
    """Place the model for the active Keras backend and say where, in words.

    Args:
        threads: CPU threads per operation (``None``: one per core), applied under
            TensorFlow and torch. Several workers with one thread each trade
            single-image latency for throughput; see benchmarks/README.md.
        device: ``auto``, ``cpu`` or ``gpu`` (the ``PNEUMO_DEVICE`` setting).

    Returns:
        The :class:`Placement`; ``str()`` of it is what the log and ``/readyz`` show.

    Raises:
        ValueError: a bad ``threads`` or ``device`` value.
        DeviceError: ``device="gpu"`` and the backend sees no GPU, or the choice
            came after the backend had already started on another device.

    Call it before the backend's first operation: a GPU cannot be hidden, nor
    TensorFlow's memory growth set, once the backend has started.
    """
    check_threads(threads)
    device = check_device_choice(device)
    if "keras" not in sys.modules:
        _prepare_environment(device)
    with quiet_gpu_probe():
        import keras  # lazy: importing Keras starts its backend, which this set-up must precede

        backend = keras.config.backend()
        place = {"tensorflow": _place_tensorflow, "jax": _place_jax, "torch": _place_torch}.get(
            backend
        )
        if place is None:
            raise DeviceError(
                f"The Keras backend {backend!r} is not supported here; use "
                "KERAS_BACKEND=tensorflow, jax or torch."
            )
        placement = place(device, threads)
    if device == "gpu" and placement.kind != "gpu":
        raise DeviceError(
            f"PNEUMO_DEVICE=gpu, but the {backend} backend sees no GPU "
            f"(NVIDIA driver {'present' if nvidia_driver_present() else 'absent'})."
        )
    if device == "auto" and placement.kind == "cpu" and nvidia_driver_present():
        log.warning(
            "an NVIDIA driver is present but the %s backend sees no GPU (a CPU-only "
            "build of %s?): the model runs on the CPU",
            backend,
            backend,
        )
    return placement


def _place_tensorflow(device: str, threads: int | None) -> Placement:
    import tensorflow as tf  # lazy: an optional backend, present only under it

    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:  # already initialised
            raise DeviceError(
                "PNEUMO_DEVICE=cpu came too late: TensorFlow had already started on the GPU"
            ) from exc
        gpus = []
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth must be set first
            log.warning("GPU memory growth could not be enabled (TensorFlow already started)")
    if not gpus:
        return Placement("tensorflow", "cpu", threads=threads)
    details = tf.config.experimental.get_device_details(gpus[0])
    return Placement("tensorflow", "gpu", 0, details.get("device_name", gpus[0].name))


def _place_jax(device: str, threads: int | None) -> Placement:
    import jax  # lazy: an optional backend, present only under it

    if device == "cpu":
        # JAX_PLATFORMS=cpu (set before import) keeps JAX off the GPU altogether;
        # when JAX had started already, its default device still moves to the CPU
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    if threads is not None:
        log.info(
            "PNEUMO_TF_THREADS=%d is not applied under jax (XLA picks its CPU threads)", threads
        )
    where = next(iter(_probe().devices()))
    if where.platform == "gpu":
        return Placement("jax", "gpu", where.id, where.device_kind)
    return Placement("jax", "cpu")


def _place_torch(device: str, threads: int | None) -> Placement:
    import torch  # lazy: an optional backend, present only under it

    if threads is not None:
        torch.set_num_threads(threads)
    where = _probe().device  # Keras' torch backend picks its device once, at import
    if device == "cpu" and where.type != "cpu":
        raise DeviceError(
            f"PNEUMO_DEVICE=cpu came too late: Keras' torch backend had already started on {where}"
        )
    if where.type == "cpu":
        return Placement("torch", "cpu", threads=threads)
    index = where.index or 0
    name = torch.cuda.get_device_name(index) if where.type == "cuda" else where.type.upper()
    return Placement("torch", "gpu", index, name)


def _probe():
    """A one-element tensor made by Keras: it lands where the model's tensors will."""
    import keras  # lazy: importing Keras starts its backend, which this set-up must precede

    return keras.ops.zeros((1,))


def weights_device(model) -> str:
    """Where the model's first weight lives, as the backend names it: ``cuda:0`` or
    ``cpu`` (torch, JAX), ``/job:localhost/replica:0/task:0/device:GPU:0`` (TensorFlow)."""
    value = model.weights[0].value
    if hasattr(value, "devices"):  # a JAX array
        return ", ".join(sorted(str(d) for d in value.devices())).lower()
    return str(value.device)


def gpu_memory_peak() -> dict | None:
    """The backend allocator's peak GPU memory in this process, or ``None`` on the CPU.

    Returns ``{"peak_mib": float, "source": str}``; the CUDA context (a few
    hundred MiB) is not included, so ``nvidia-smi`` shows more.
    """
    import keras  # lazy: importing Keras starts its backend, which this set-up must precede

    backend = keras.config.backend()
    try:
        if backend == "torch":
            import torch  # lazy: an optional backend, present only under it

            if torch.cuda.is_available() and torch.cuda.max_memory_reserved():
                return {
                    "peak_mib": torch.cuda.max_memory_reserved() / 2**20,
                    "source": "torch.cuda.max_memory_reserved",
                }
        elif backend == "jax":
            import jax  # lazy: an optional backend, present only under it

            stats = jax.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return {
                    "peak_mib": stats["peak_bytes_in_use"] / 2**20,
                    "source": "jax memory_stats peak_bytes_in_use",
                }
        elif backend == "tensorflow":
            import tensorflow as tf  # lazy: an optional backend, present only under it

            if tf.config.get_visible_devices("GPU"):
                return {
                    "peak_mib": tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20,
                    "source": "tf.config.experimental.get_memory_info peak",
                }
    except Exception as exc:  # noqa: BLE001 - a figure for a report, never fatal
        log.warning("peak GPU memory could not be read: %s", exc)
    return None


def has_gpu() -> bool:
    """True when the active Keras backend computes on a GPU (a forced CPU counts as none)."""
    import keras  # lazy: importing Keras starts its backend, which this set-up must precede

    backend = keras.config.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf  # lazy: an optional backend, present only under it

            return bool(tf.config.get_visible_devices("GPU"))
        if backend == "jax":
            return next(iter(_probe().devices())).platform == "gpu"
        if backend == "torch":
            return _probe().device.type != "cpu"
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU
        return False
    return False
