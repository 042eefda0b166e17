#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test.
#   1. release build: every ctest (unit, end to end, faults, web, browser) and
#      the daqload pytest suite;
#   2. the same ctest suite under AddressSanitizer + UndefinedBehaviorSanitizer
#      (debug preset);
#   3. ThreadSanitizer over the threaded parts (scripts/tsan.sh);
#   4. the libFuzzer targets, FUZZ_SECONDS each (default 60) from the committed
#      corpus (scripts/fuzz.sh).
# Each stage prints its wall time. docs/RELIABILITY.md says what each covers.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo; echo "=== test.sh: $* ($(date -u +%H:%M:%S))"; }
t0=$(date +%s)
scripts/install-deps.sh

stage "release: build"
scripts/build.sh release
stage "release: ctest"
ctest --preset release -j 2 --timeout 600
# daqload, the Python reader (tools/daqload): its tests start the daqd and
# daq-sim just built. Debian's Python, which has python3-torch and python3-h5py.
# The suite first builds daqload's native extension in place (conftest.py:
# tools/daqload, setup.py build_ext --inplace; git ignores the output).
stage "release: pytest"
DAQD_BUILD_DIR=build/release /usr/bin/python3 -m pytest -q tests/python

stage "asan+ubsan: build"
scripts/build.sh debug
stage "asan+ubsan: ctest"
ctest --preset debug -j 2 --timeout 900

stage "tsan"
scripts/tsan.sh

stage "fuzz"
FUZZ_PARALLEL=2 scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

echo
echo "test.sh: every stage passed in $(( ($(date +%s) - t0) / 60 )) min $(( ($(date +%s) - t0) % 60 )) s"
