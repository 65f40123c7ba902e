#!/usr/bin/env bash
# Serve the app with the bundled model on http://127.0.0.1:8000 (gunicorn via wsgi.py).
# On a fresh clone it first makes the serving environment (.venv: requirements.txt and the
# project only, no test or training tools, no root needed); later starts skip that step.
# Settings: PNEUMO_HOST, PNEUMO_PORT, PNEUMO_WORKERS, PNEUMO_THREADS, PNEUMO_MODEL_DIR, ... (docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh serve
exec "${PNEUMO_VENV:-.venv}/bin/gunicorn" -c gunicorn.conf.py wsgi:app
