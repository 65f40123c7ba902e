#!/bin/sh
# Container entrypoint: check the data volume and the model, purge expired
# results, then run the given command (gunicorn by default).
set -eu
: "${PNEUMO_INSTANCE_DIR:=/data}"
: "${PNEUMO_DATA_DIR:=$PNEUMO_INSTANCE_DIR/results-store}"
: "${PNEUMO_RETENTION_DAYS:=30}"
mkdir -p "$PNEUMO_DATA_DIR" 2>/dev/null || true
if [ ! -w "$PNEUMO_INSTANCE_DIR" ]; then
  echo "error: data directory $PNEUMO_INSTANCE_DIR is not writable by $(id -un)" >&2
  exit 1
fi
model="${PNEUMO_MODEL_DIR:-${PNEUMO_MODEL:-}}"
if [ -n "$model" ] && [ ! -f "$model/model.json" ]; then
  echo "error: PNEUMO_MODEL_DIR=$model has no model.json" >&2
  exit 1
fi
pneumo purge --data-dir "$PNEUMO_DATA_DIR" --days "$PNEUMO_RETENTION_DAYS" || true
exec "$@"
