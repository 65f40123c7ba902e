"""Training: config -> cached arrays -> augmented batches -> fit -> model folder.

Modules by step: ``config`` (what a run needs), ``data`` (split, decoded
arrays, balanced batches), ``augment``, ``callbacks`` (per-epoch tune checks
and checkpoints), ``loop`` (compile and fit) and ``packaging`` (tuning on the
tune split, validation figures, the model folder). Runs on any Keras backend.
"""
from pneumo.training.augment import augment_pair
from pneumo.training.config import Augment, TrainConfig
from pneumo.training.data import balanced_indices, cached_arrays, split_samples
from pneumo.training.loop import train
from pneumo.training.packaging import finalize, load_init_weights

__all__ = ["Augment", "TrainConfig", "augment_pair", "balanced_indices", "cached_arrays",
           "finalize", "load_init_weights", "split_samples", "train"]
