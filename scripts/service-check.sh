#!/usr/bin/env bash
# daqd as a facility service, end to end (issue 17's "done when"): builds
# the release preset, installs it into a staging prefix (cmake --install),
# starts the installed daqd as systemd would (NOTIFY_SOCKET, WATCHDOG_USEC),
# starts a run from the status page in headless Chromium, reloads the
# configuration with SIGHUP mid-run, checks that every frame sent was
# written and that a real Prometheus shows the reload, then stops it.
# Each step prints ok/FAIL (tests/packaging/service_check.py). The same
# chain runs in the test suite as ctest `service_chain`.
# Usage: scripts/service-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
tests/web/install_playwright.sh build/release/web-node
exec /usr/bin/python3 tests/packaging/service_check.py build/release build/release/web-node/node_modules /usr/bin/prometheus
