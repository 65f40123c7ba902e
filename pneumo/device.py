"""Where the model runs: the GPU when TensorFlow sees one (memory growth on), else the CPU."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure_device() -> str:
    """Enable GPU memory growth when possible and describe the device in words.

    Must run before the first TensorFlow operation of the process.
    """
    import keras
    if keras.config.backend() != "tensorflow":
        return f"{keras.config.backend()} backend"
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth must be set first
            log.warning("GPU memory growth could not be enabled (TensorFlow already started)")
    if gpus:
        return f"GPU ({', '.join(g.name for g in gpus)}, memory growth on)"
    return "CPU"
