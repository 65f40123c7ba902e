#!/usr/bin/env bash
# Start the app with the bundled model on http://127.0.0.1:8000 (gunicorn via wsgi.py).
# Settings: PNEUMO_HOST, PNEUMO_PORT, PNEUMO_WORKERS, PNEUMO_THREADS, PNEUMO_MODEL_DIR, ... (README).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/gunicorn -c gunicorn.conf.py wsgi:app
