#!/usr/bin/env bash
# `cmake --install` into a staging prefix, then what a service needs from it:
# every file in place, the installed daqd checks and prints the installed
# configuration, the unit names the installed binary and configuration, and
# the same with DESTDIR and the prefix /usr (a package's), and
# `systemd-analyze verify` accepts the unit (exit 77, a skip, where
# systemd-analyze is missing: package `systemd`).
# Usage: test_install.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
stage="$build/install-test"
rm -rf "$stage"
cmake --install "$build" --prefix "$stage" >"$build/install-test.log"
fail() { echo "FAIL: $*"; exit 1; }

for f in bin/daqd bin/daq-sim bin/daq-inspect bin/daq-ringwatch; do
  [ -x "$stage/$f" ] || fail "$f is not installed (or not executable)"
done
for f in etc/daqd/daqd.toml share/daqd/dashboards/grafana-daqd.json share/daqd/dashboards/prometheus.yml \
         share/daqd/dashboards/daqd-alerts.yml share/daqd/dashboards/daqd-alerts.test.yml lib/systemd/system/daqd.service lib/sysusers.d/daqd.conf; do
  [ -f "$stage/$f" ] || fail "$f is not installed"
done
# The installed alert rules pass their installed unit tests.
if [ -x /usr/bin/promtool ]; then
  (cd "$stage/share/daqd/dashboards" && /usr/bin/promtool test rules daqd-alerts.test.yml) >/dev/null 2>&1 \
    || fail "promtool test rules fails on the installed share/daqd/dashboards/daqd-alerts.test.yml"
fi

config="$stage/etc/daqd/daqd.toml"
out=$("$stage/bin/daqd" --check-config "$config") || fail "daqd --check-config $config: $out"
[ "$out" = "$config: configuration is valid" ] || fail "unexpected --check-config output: $out"
printed=$("$stage/bin/daqd" --config "$config" --print-config) || fail "daqd --print-config failed"
grep -q '^output_dir = "/data/daqd/runs"' <<<"$printed" || fail "--print-config does not show the installed configuration"
# What it prints is itself a valid configuration.
"$stage/bin/daqd" --check-config <(printf '%s\n' "$printed") >/dev/null || fail "--print-config output does not check"
version=$("$stage/bin/daqd" --version) || fail "daqd --version"
[[ "$version" == "daqd "* ]] || fail "daqd --version: $version"

unit="$stage/lib/systemd/system/daqd.service"
grep -qx "ExecStart=$stage/bin/daqd --config $config" "$unit" || fail "ExecStart does not name the installed files: $(grep ExecStart= "$unit")"
for line in 'Type=notify' 'ExecReload=/bin/kill -HUP $MAINPID' 'User=daqd' 'ProtectSystem=strict' \
            'NoNewPrivileges=yes' 'AmbientCapabilities=CAP_NET_ADMIN' 'CapabilityBoundingSet=CAP_NET_ADMIN' \
            'Restart=on-failure'; do
  grep -qxF "$line" "$unit" || fail "$line is not in the unit"
done
grep -q '^WatchdogSec=' "$unit" || fail "no WatchdogSec in the unit"
grep -q '^ReadWritePaths=-\?/data/daqd/runs$' "$unit" || fail "ReadWritePaths is not the configuration's output_dir"

# A package's install: DESTDIR with the prefix /usr puts the configuration
# in /etc (not /usr/etc) and the unit names the final paths.
pkgroot="$build/install-test-destdir"
rm -rf "$pkgroot"
DESTDIR="$pkgroot" cmake --install "$build" --prefix /usr >>"$build/install-test.log"
[ -f "$pkgroot/etc/daqd/daqd.toml" ] || fail "DESTDIR install with prefix /usr: no etc/daqd/daqd.toml"
[ -x "$pkgroot/usr/bin/daqd" ] || fail "DESTDIR install with prefix /usr: no usr/bin/daqd"
grep -qx "ExecStart=/usr/bin/daqd --config /etc/daqd/daqd.toml" "$pkgroot/usr/lib/systemd/system/daqd.service" ||
  fail "DESTDIR install with prefix /usr: $(grep ExecStart= "$pkgroot/usr/lib/systemd/system/daqd.service")"

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze not found (Debian package systemd): the unit was not verified"
  exit 77
fi
# --man=no: daqd has no man page. Any message is a finding.
msgs=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify: $msgs"
[ -z "$msgs" ] || fail "systemd-analyze verify: $msgs"
echo "installed into $stage: files, --check-config, --print-config and the unit (systemd-analyze verify) are good"
