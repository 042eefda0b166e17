#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
ctest --preset release -j 2 --timeout 600
# daqload, the Python reader (tools/daqload): its tests start the daqd and
# daq-sim just built. Debian's Python, which has python3-torch and python3-h5py.
DAQD_BUILD_DIR=build/release /usr/bin/python3 -m pytest -q tests/python
