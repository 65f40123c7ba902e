#!/bin/sh
# Container entrypoint: check the data volume and the model, purge expired
# results, then run the given command (gunicorn by default; with PNEUMO_PROXY on, as the
# images set it, gunicorn starts nginx in front of itself: app/proxy.py).
# Folders and the retention period come from the service's settings (`pneumo settings`,
# app/settings.py), the one place their defaults are written; the image sets only
# PNEUMO_INSTANCE_DIR and PNEUMO_DATA_DIR (Dockerfile).
set -eu
instance_dir=$(pneumo settings instance_dir) || exit 1
data_dir=$(pneumo settings data_dir) || exit 1
model=$(pneumo settings model_dir) || exit 1
mkdir -p "$data_dir" 2>/dev/null || true
if [ ! -w "$instance_dir" ]; then
  echo "error: data directory $instance_dir is not writable by $(id -un)" >&2
  exit 1
fi
if [ ! -f "$model/model.json" ]; then
  echo "error: PNEUMO_MODEL_DIR=$model has no model.json" >&2
  exit 1
fi
pneumo purge || true
exec "$@"
