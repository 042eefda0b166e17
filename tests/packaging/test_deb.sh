#!/usr/bin/env bash
# The .deb: built with cpack from this build, installed with dpkg -i, the
# installed /usr/bin/daqd run, purged. Root only, and only where no daqd
# package or /usr/bin/daqd is there already (exit 77, a skip, otherwise).
# Leaves the machine as it found it (the user daqd removed if this test
# created it). Usage: test_deb.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "not root: dpkg -i needs it"
command -v dpkg >/dev/null && command -v cpack >/dev/null || skip "dpkg or cpack not found"
status=$(dpkg-query -W -f='${Status}' daqd 2>/dev/null || true)
if [[ "$status" == *" installed" ]] || [ -e /usr/bin/daqd ]; then
  skip "a daqd package or /usr/bin/daqd is installed here: not touching it"
fi

out="$build/deb-test"
rm -rf "$out"
(cd "$build" && cpack -G DEB -B "$out" >"$build/deb-test.log" 2>&1) || { cat "$build/deb-test.log"; fail "cpack"; }
deb=$(ls "$out"/daqd_*.deb)
[ -f "$deb" ] || fail "no .deb in $out"

depends=$(dpkg-deb -f "$deb" Depends)
for p in libhdf5-103-1 liburing2 libspdlog1.10 libsystemd0 libtomlplusplus3; do
  grep -q "\b$p\b" <<<"$depends" || fail "Depends lacks $p: $depends"
done
[ "$(dpkg-deb -f "$deb" Recommends)" = bitshuffle ] || fail "Recommends: $(dpkg-deb -f "$deb" Recommends)"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/daqd ./usr/bin/daq-sim ./usr/bin/daq-inspect ./usr/bin/daq-ringwatch ./etc/daqd/daqd.toml \
         ./usr/share/daqd/dashboards/grafana-daqd.json ./usr/lib/systemd/system/daqd.service ./usr/lib/sysusers.d/daqd.conf; do
  grep -q " $f\$" <<<"$contents" || fail "$f is not in the package"
done
conffiles=$(dpkg-deb -I "$deb" conffiles)
grep -qx /etc/daqd/daqd.toml <<<"$conffiles" || fail "/etc/daqd/daqd.toml is not a conffile: $conffiles"

had_user=0
getent passwd daqd >/dev/null && had_user=1
cleanup() {
  dpkg --purge daqd >/dev/null 2>&1 || true
  if [ "$had_user" = 0 ] && getent passwd daqd >/dev/null; then userdel daqd 2>/dev/null || true; fi
}
trap cleanup EXIT
dpkg -i "$deb" >"$build/deb-test.dpkg.log" 2>&1 || { cat "$build/deb-test.dpkg.log"; fail "dpkg -i"; }

# (Output captured first: grep -q leaving a pipe early would be a SIGPIPE under pipefail.)
printed=$(/usr/bin/daqd --print-config) || fail "/usr/bin/daqd --print-config"
grep -q '^output_dir = "./runs"' <<<"$printed" || fail "/usr/bin/daqd --print-config: no default output_dir"
printed=$(/usr/bin/daqd --config /etc/daqd/daqd.toml --print-config) || fail "/usr/bin/daqd --print-config on /etc/daqd/daqd.toml"
grep -q '^output_dir = "/data/daqd/runs"' <<<"$printed" || fail "/usr/bin/daqd --print-config on /etc/daqd/daqd.toml"
/usr/bin/daqd --check-config /etc/daqd/daqd.toml >/dev/null || fail "/usr/bin/daqd --check-config /etc/daqd/daqd.toml"
/usr/bin/daq-sim --help >/dev/null || fail "/usr/bin/daq-sim --help"
grep -qx "ExecStart=/usr/bin/daqd --config /etc/daqd/daqd.toml" /usr/lib/systemd/system/daqd.service ||
  fail "the installed unit: $(grep ExecStart= /usr/lib/systemd/system/daqd.service)"
getent passwd daqd >/dev/null || fail "postinst did not create the user daqd"

dpkg --purge daqd >"$build/deb-test.dpkg.log" 2>&1 || { cat "$build/deb-test.dpkg.log"; fail "dpkg --purge"; }
[ ! -e /usr/bin/daqd ] || fail "/usr/bin/daqd is still there after dpkg --purge"
[ ! -e /etc/daqd ] || fail "/etc/daqd is still there after dpkg --purge"
echo "$deb: built, installed, /usr/bin/daqd ran, purged"
