#!/usr/bin/env bash
# Training set-up for self-training (issue 32, item 8): put the 3,205 unlabelled SIIM
# stage-2 test DICOMs where configs/data_siim_v3.json expects them (.cache/siim_stage2).
# They come from one folder of one commit of a public repository; serving never reads them.
#
#   bash scripts/siim_stage2.sh [GIT_DIR_OR_URL] [OUT]
#
# GIT_DIR_OR_URL: a local clone or bare mirror of the repository (default: clone it from
# GitHub, 441 MB). OUT: default .cache/siim_stage2.
set -euo pipefail
REPO_URL="https://github.com/VISHAKHNAIR16/Capstone-Pneumothorax-Detection-and-Segmentation-in-Portable-Chest-"
COMMIT=00c6969
FOLDER=Data/stage_2_images
EXPECTED=3205
cd "$(dirname "$0")/.."
source="${1:-$REPO_URL}"
out="${2:-.cache/siim_stage2}"
if [ -d "$source" ]; then
  git_dir="$(git -C "$source" rev-parse --absolute-git-dir)"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  git clone --quiet --bare "$source" "$tmp/repo.git"
  git_dir="$tmp/repo.git"
fi
if ! git --git-dir="$git_dir" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  echo "error: commit $COMMIT is not in $source" >&2
  exit 1
fi
mkdir -p "$out"
git --git-dir="$git_dir" archive "$COMMIT" "$FOLDER" | tar -x -C "$out"
count="$(find "$out/$FOLDER" -name '*.dcm' | wc -l)"
if [ "$count" -ne "$EXPECTED" ]; then
  echo "error: $count DICOMs in $out/$FOLDER, expected $EXPECTED" >&2
  exit 1
fi
echo "$count SIIM stage-2 DICOMs from $COMMIT in $out/$FOLDER"
