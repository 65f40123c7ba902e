#!/usr/bin/env bash
# Prepare, here, what scripts/device_train.sh needs on a GPU machine of the device tool
# (issue 32, item 6), which can download nothing and takes at most 64 MiB in all:
#   .device_train/packed.npz   the config's train and tune films at 512 px, JPEG, with their
#                              targets (`pneumo pack`; budget BUDGET_MB, default 29 MiB: the
#                              repository with the warm-start weights is about 30 MiB)
#   .device_train/config.json  the config with the GPU run's settings (DEVICE_SETTINGS)
#   .device_train/wheels/      Python 3.12 wheels of what training needs there: Keras, pydicom
# .device_train/ is git-ignored through .git/info/exclude; the device tool carries it:
#   run(command="bash scripts/device_train.sh", carry=[".device_train"], timeout_s=560)
# Settings: CONFIG (configs/train_double_unet_lite0_384_v5.json), INIT_WEIGHTS (the bundled
# model's), QUALITY (70),
# TRAIN_ONLY (at most this many pseudo-labelled films; 120, so that the pack fits), BUDGET_MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/wheels.sh
PY=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-configs/train_double_unet_lite0_384_v5.json}
TRAIN=.device_train
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF "/$TRAIN/" "$exclude" 2>/dev/null || echo "/$TRAIN/" >> "$exclude"
rm -rf "$TRAIN"
mkdir -p "$TRAIN/wheels"

# The GPU run: larger batches, mixed precision, a fixed wall-clock budget (checkpoints
# every epoch), the same recipe otherwise.
"$PY" - "$CONFIG" "$TRAIN/config.json" <<'PYEOF'
import json, os, sys
cfg = json.load(open(sys.argv[1]))
cfg.update(
    json.loads(
        os.environ.get(
            "DEVICE_SETTINGS",
            '{"batch_size": 32, "steps_per_epoch": 60, "epochs": 30, "max_seconds": 420,'
            ' "precision": "auto", "cache_dir": "/tmp/pneumo-cache"}',
        )
    )
)
# a warm start from the bundled model (a config's own may name weights no longer in the tree)
sys.path.insert(0, ".")
from pneumo import paths
cfg["init_weights"] = os.environ.get(
    "INIT_WEIGHTS", str(paths.default_model_dir().relative_to(paths.project_root()) / "weights.weights.h5")
)
cfg["_comment"] = f"GPU run of {sys.argv[1]} from a pack (scripts/device/prepare_train.sh)"
json.dump(cfg, open(sys.argv[2], "w"), indent=2)
PYEOF

pack_args=(--config "$CONFIG" --out "$TRAIN/packed.npz" --quality "${QUALITY:-70}"
           --budget-mb "${BUDGET_MB:-29}")
pack_args+=(--train-only "${TRAIN_ONLY:-120}")
"$PY" -m pneumo.cli pack "${pack_args[@]}"

"$PY" scripts/device/wheels.py keras pydicom > "$TRAIN/wheels/requirements.txt"
download_wheels "$PY" "$TRAIN/wheels"
echo "prepared $TRAIN: $(du -sh "$TRAIN" | cut -f1); with the repository:" \
     "$(( ($(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -sb "$TRAIN" | cut -f1)) / 1048576 )) MiB"
