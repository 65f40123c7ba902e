"""Training: config -> cached arrays -> augmented batches -> fit -> model folder.

Modules by step: ``config`` (what a run needs), ``data`` (split, decoded
arrays, balanced batches), ``augment``, ``callbacks`` (per-epoch tune checks
and checkpoints), ``loop`` (compile and fit) and ``packaging`` (tuning on the
tune split, validation figures, the model folder). Runs on any Keras backend.
"""
