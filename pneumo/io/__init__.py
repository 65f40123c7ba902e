"""File formats: reading DICOM/PNG/JPEG into display pixels and metadata (``imaging``,
``spacing``), SIIM run-length masks (``rle``), DICOM Segmentation output (``seg``) and the
re-encodings of a film (``encodings``). No network, no Keras."""
