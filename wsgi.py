"""WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Each gunicorn worker imports this module and so loads its own copy of the
model (never use ``--preload`` with TensorFlow).
"""
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.basicConfig(level=os.environ.get("PNEUMO_LOG_LEVEL", "INFO"),
                    format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

from app import create_app  # noqa: E402

app = create_app()
