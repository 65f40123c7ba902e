"""Serving a model folder: the one preprocessing path (``preprocess``), the runtime seam and
device placement (``runtime``, ``device``), the model card (``card``), post-processing and
calibration as data (``postprocess``, ``calibration``), the chest gate (``gate``), overlays
and laterality for display (``overlay``, ``laterality``) and the :class:`Predictor`
(``predictor``). Nothing here imports the training pipeline or the evaluation tools."""
