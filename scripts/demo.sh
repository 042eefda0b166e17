#!/usr/bin/env bash
# The main job: build daqd, start it on its embedded default configuration
# (UDP 127.0.0.1:4660, units learned, runs under ./runs), feed it simulated
# hardware traffic for a few seconds, stop it, and show what was taken.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
bin=build/release
run="demo-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p runs
echo "== starting daqd (run $run)"
"$bin/daqd/daqd" --run "$run" --duration 8 --summary-json "runs/$run.summary.json" &
daqd_pid=$!
trap 'kill $daqd_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q ':1234 ' /proc/net/udp 2>/dev/null && break   # 4660 = 0x1234
  sleep 0.05
done
echo "== daq-sim: 4 units x 4096 channels at 400 Mbit/s for 4 s, 0.1 % loss and reordering"
"$bin/tools/sim/daq-sim" --units 4 --channels 4096 --duration 4 --rate 400 --loss 0.001 --reorder 0.001 --quiet \
  --json "runs/$run.sim.json" > /dev/null
wait $daqd_pid
trap - EXIT
echo "== daq-inspect --verify"
"$bin/tools/inspect/daq-inspect" --verify "runs/$run.h5"
echo
echo "run file: $(pwd)/runs/$run.h5"
echo "summary:   $(pwd)/runs/$run.summary.json (daqd), runs/$run.sim.json (what daq-sim sent and injected)"
