#!/usr/bin/env bash
# Make or update the development environment (test tools, training extras, Debian chromium
# and Orthanc when root) and run the whole test suite; arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not slow and not bundled"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec "${PNEUMO_VENV:-.venv}/bin/python" -m pytest "$@"
