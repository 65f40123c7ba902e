"""Where the project's folders are, resolved in one place.

Run from a checkout (the usual case, and the Docker image's ``/app``), the
project root is the folder above this package. An installed package (a
wheel in site-packages) has no ``models/`` beside it: then ``PNEUMO_HOME``
names the project folder, and without it the current directory is used.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The bundled default model's folder name under ``models/``.
DEFAULT_MODEL_NAME = "double_unet_lite0_384_v5"


def project_root() -> Path:
    """The folder holding ``models/``, ``configs/``, ``templates/`` and ``static/``."""
    if os.environ.get("PNEUMO_HOME"):
        return Path(os.environ["PNEUMO_HOME"]).resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "models").is_dir():
        return checkout
    return Path.cwd().resolve()


def default_model_dir() -> Path:
    """The bundled default model folder."""
    return project_root() / "models" / DEFAULT_MODEL_NAME


def default_data_config() -> Path:
    """The data configuration that training and evaluation use by default."""
    return project_root() / "configs" / "data_siim_v2.json"


def cache_dir() -> Path:
    """Training caches (decoded arrays, fetched encoder weights); git-ignored."""
    return project_root() / ".cache"
