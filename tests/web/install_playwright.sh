#!/bin/sh
# Installs playwright-core (the browser driver, no browsers) into DIR once,
# for the status-page test. Never fails the build: without it the page test
# reports itself skipped.   usage: install_playwright.sh DIR
dir="$1"
if [ -f "$dir/node_modules/playwright-core/package.json" ]; then exit 0; fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: the status-page test will be skipped"
  exit 0
fi
mkdir -p "$dir"
if ! timeout 300 npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "playwright-core@^1.40"; then
  echo "npm install playwright-core failed (offline?): the status-page test will be skipped"
fi
exit 0
