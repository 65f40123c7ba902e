#!/bin/sh
# Container entrypoint: check the data volume and the model, purge expired
# results, start nginx in front when PNEUMO_PROXY is on (the images set it), then run
# the given command (gunicorn by default).
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
if [ "$(pneumo settings proxy)" = "True" ]; then
  # nginx on PNEUMO_PORT, gunicorn on a unix socket behind it (app/proxy.py)
  conf=$(pneumo proxy-config "$instance_dir/nginx") || exit 1
  if ! nginx -e stderr -c "$conf"; then
    echo "error: nginx could not start in front of gunicorn (PNEUMO_PROXY=1)" >&2
    exit 1
  fi
fi
exec "$@"
