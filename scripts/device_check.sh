#!/usr/bin/env bash
# GPU serving check (issue 16): the bundled model under gunicorn with KERAS_BACKEND=jax,
# then torch; real SIIM DICOMs uploaded through the API; cold start, p50/p95 per upload,
# `pneumo predict` images/s at batch 1 and 16, peak GPU memory, outputs equal to the CPU
# ones within 1e-3. JSON report: $OUT/device_check.json (server and predict logs beside it).
#
# On a GPU machine of the device tool (python3 there has JAX and PyTorch with CUDA and
# can download nothing), in at most 5 minutes:
#   here:   bash scripts/device/prepare.sh     # wheels it lacks, DICOMs, CPU reference
#   there:  bash scripts/device_check.sh       # the tool's run, carry [".device_check"]
# On a CPU (the same steps, tested here; any backend installed in the interpreter):
#   PYTHON=.venv/bin/python PNEUMO_DEVICE=cpu BACKENDS="torch jax" OUT=/tmp/check \
#     bash scripts/device_check.sh
# Settings: PYTHON (python3), BACKENDS ("jax torch"), PNEUMO_DEVICE (auto), OUT
# (.device_check/out), FILES (40 DICOMs at most), ROUNDS (2 uploads of each file),
# BUDGET_S (270: backends not started by then are skipped). Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
CHECK=$ROOT/.device_check
OUT_DIR=${OUT:-$CHECK/out}
mkdir -p "$OUT_DIR"
started=$(date +%s)

# The app's packages the machine lacks, from the carried wheels (--target: nothing of
# the machine's own Python is changed; PYTHONPATH puts them first for every process).
source "$ROOT/scripts/device/wheels.sh"
install_carried_wheels "$PY" "$CHECK/wheels"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "no nvidia-smi: no GPU here"

data=()
[ -d "$CHECK/siim" ] && data=(--data "$CHECK/siim")
exec "$PY" scripts/device/check.py --backends "${BACKENDS:-jax torch}" \
  --device "${PNEUMO_DEVICE:-auto}" "${data[@]}" --reference "$CHECK/cpu_reference" \
  --files "${FILES:-40}" --rounds "${ROUNDS:-2}" --budget-s "${BUDGET_S:-270}" --out "$OUT_DIR"
