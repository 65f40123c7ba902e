"""WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Each gunicorn worker imports this module and so loads its own copy of the
model (never use ``--preload`` with TensorFlow).
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for TensorFlow, before it is imported

from app import create_app  # noqa: E402
from app.settings import LOG_FORMAT, Settings  # noqa: E402

logging.basicConfig(level=Settings.from_env().log_level, format=LOG_FORMAT)
app = create_app()
