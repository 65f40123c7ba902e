"""Where the model runs: the GPU when TensorFlow sees one (memory growth on), else the CPU."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

log = logging.getLogger(__name__)


#: Lines TensorFlow's C++ runtime prints on every start-up of a machine without an
#: NVIDIA driver: expected there, so they are dropped; every other line is kept.
EXPECTED_WITHOUT_GPU = ("failed call to cuInit", "Could not find cuda drivers",
                        "All log messages before absl::InitializeLog()",
                        "oneDNN custom operations are on",
                        "rebuild TensorFlow with the appropriate compiler flags",
                        "This TensorFlow binary is optimized to use available CPU")


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
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True)
                    if not any(p in line for p in EXPECTED_WITHOUT_GPU)]
            if kept:
                os.write(2, "".join(kept).encode())


def configure_device(threads: int | None = None) -> str:
    """Enable GPU memory growth when possible and describe the device in words.

    ``threads`` caps TensorFlow's CPU threads per operation (``None``: one per
    core). Several workers with one thread each trade single-image latency for
    throughput; see benchmarks/README.md. Must run before the first
    TensorFlow operation of the process.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"PNEUMO_TF_THREADS must be a whole number of at least 1, "
                         f"got {threads!r}")
    with quiet_gpu_probe():
        import keras
        if keras.config.backend() != "tensorflow":
            return f"{keras.config.backend()} backend"
        import tensorflow as tf
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth must be set first
            log.warning("GPU memory growth could not be enabled (TensorFlow already started)")
    if gpus:
        return f"GPU ({', '.join(g.name for g in gpus)}, memory growth on)"
    return "CPU" if threads is None else f"CPU ({threads} thread{'s' if threads > 1 else ''})"


def has_gpu() -> bool:
    """True when the active Keras backend sees a GPU."""
    import keras
    backend = keras.config.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax
            return jax.devices()[0].platform == "gpu"
        if backend == "torch":
            import torch
            return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU
        return False
    return False
