"""Where the model runs: the GPU when TensorFlow sees one (memory growth on), else the CPU."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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
