#!/usr/bin/env bash
# A GPU training run from a pack (issue 32, item 6), on a GPU machine of the device tool
# (python3 there has JAX with CUDA and can download nothing):
#   here:   bash scripts/device/prepare_train.sh   # pack, config, wheels in .device_train/
#   there:  bash scripts/device_train.sh           # the tool's run, carry [".device_train"]
#   here:   cat <files_at>/weights.part-* > runs/device/weights.weights.h5, the other files
#           beside it, then `pneumo finalize --config CONFIG --run runs/device --out ...`
#           scores the candidate on the real tune and validation films on the CPU.
# On a CPU (tested here, with a config of a few steps in TRAIN_CONFIG):
#   PYTHON=.venv/bin/python KERAS_BACKEND=jax OUT=/tmp/dt TRAIN_CONFIG=/tmp/few.json \
#   bash scripts/device_train.sh
# What comes back in $OUT (at most 8 files of 16 MiB): the best checkpoint in 15 MiB
# parts, log.csv, state.json, training.json, train.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
TRAIN=$ROOT/.device_train
OUT_DIR=${OUT:-$TRAIN/out}
RUN=${RUN_DIR:-/tmp/pneumo-device-run}
mkdir -p "$OUT_DIR"
[ -f "$TRAIN/packed.npz" ] || { echo "error: no $TRAIN/packed.npz (run scripts/device/prepare_train.sh)" >&2; exit 2; }

source "$ROOT/scripts/device/wheels.sh"
install_carried_wheels "$PY" "$TRAIN/wheels"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX takes GPU memory as it needs it, not 75 % at start
export XLA_PYTHON_CLIENT_PREALLOCATE=false
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "no nvidia-smi: no GPU here"

rm -rf "$RUN"
status=0
"$PY" -m pneumo.cli train --config "${TRAIN_CONFIG:-$TRAIN/config.json}" --packed "$TRAIN/packed.npz" \
  --out "$RUN" --quiet > "$OUT_DIR/train.log" 2>&1 || status=$?
tail -n 20 "$OUT_DIR/train.log"
for f in log.csv state.json training.json; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT_DIR/"
done
if [ -f "$RUN/weights.weights.h5" ]; then
  split -b 15M -d "$RUN/weights.weights.h5" "$OUT_DIR/weights.part-"
  sha256sum "$RUN/weights.weights.h5" | cut -d' ' -f1 > "$OUT_DIR/weights.sha256"
fi
ls -la "$OUT_DIR"
exit $status
