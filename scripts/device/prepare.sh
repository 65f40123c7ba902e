#!/usr/bin/env bash
# Prepare, here (with internet and .venv), what scripts/device_check.sh needs on a GPU
# machine of the device tool, which can download nothing:
#   .device_check/wheels/    Python 3.12 manylinux wheels of the serving packages that
#                            machine lacks (scripts/device/wheels.py decides which)
#   .device_check/siim/      up to 40 readable SIIM DICOMs of distinct content, copied
#                            from ../shared/data/siim (which does not travel)
#   .device_check/cpu_reference.{json,npz}
#                            the bundled model's outputs on those files, TensorFlow on this CPU
# .device_check/ is git-ignored through .git/info/exclude; the device tool carries it:
#   run(command="bash scripts/device_check.sh", carry=[".device_check"], timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/wheels.sh
PY=${PYTHON:-.venv/bin/python}
CHECK=.device_check
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF "/$CHECK/" "$exclude" 2>/dev/null || echo "/$CHECK/" >> "$exclude"
rm -rf "$CHECK"
mkdir -p "$CHECK/wheels" "$CHECK/siim"

"$PY" scripts/device/wheels.py > "$CHECK/wheels/requirements.txt"
download_wheels "$PY" "$CHECK/wheels"

PYTHONPATH=. "$PY" - "$CHECK/siim" <<'EOF'
import shutil, sys
from pathlib import Path
sys.path.insert(0, "scripts/device")
from check import pick_dicoms, ROOT
for path in pick_dicoms(ROOT.parent / "shared" / "data" / "siim", 40):
    shutil.copy(path, Path(sys.argv[1]) / path.name)
EOF

KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 "$PY" scripts/device/predict_run.py \
  "$CHECK/siim" --device cpu --out "$CHECK/cpu_reference.json" --maps "$CHECK/cpu_reference.npz"
echo "prepared $CHECK: $(ls "$CHECK"/wheels/*.whl | wc -l) wheels, $(ls "$CHECK"/siim | wc -l) DICOMs," \
     "$(du -sh "$CHECK" | cut -f1) in all"
