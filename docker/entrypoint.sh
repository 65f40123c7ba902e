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
# the network converted when the image was built (Dockerfile), into the volume's cache when
# it is not there yet: no start converts the bundled model (the slim image cannot)
if [ -n "${PNEUMO_NETWORKS:-}" ] && [ -d "$PNEUMO_NETWORKS" ] && [ -n "${XDG_CACHE_HOME:-}" ]; then
  mkdir -p "$XDG_CACHE_HOME/pneumo" 2>/dev/null \
    && cp -n "$PNEUMO_NETWORKS"/* "$XDG_CACHE_HOME/pneumo/" 2>/dev/null || true
fi
pneumo purge || true
exec "$@"
