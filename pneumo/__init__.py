"""pneumo: framework-free core of the pneumothorax segmentation service.

Modules: ``imaging`` (DICOM/PNG/JPEG reading), ``rle`` (SIIM run-length
masks), ``dataset`` (index and split), ``preprocess`` (model input),
``networks`` (Keras builders), ``losses``, ``metrics``, ``postprocess``,
``inference``, ``overlay``, ``training`` and ``cli``.  Nothing here imports
Flask, and nothing is configured at import time.
"""

__version__ = "0.1.0"
