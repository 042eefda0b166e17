#!/usr/bin/env bash
# Where the first loss comes from: daqd (build/release) records 4 units of
# 4096 channels over 2 loopback links at RATE Mbit/s for 60 s; /metrics is
# scraped every 10 s for each thread's CPU seconds, the writer's time in
# writes, free frame-buffer blocks and every drop. Closed run files are
# deleted as it goes. Stops by itself (daqd has a --duration backstop).
# Usage: tools/bench/first_loss.sh RATE [WORKDIR]   (docs/PERFORMANCE.md, issue 11)
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:?usage: $0 RATE_MBIT [WORKDIR]}
W=${2:-${TMPDIR:-/tmp}/daqd-first-loss-$RATE}
rm -rf "$W"; mkdir -p "$W/out"
cat > "$W/daqd.toml" <<EOT
[acquisition]
listen = ["127.0.0.1:47760", "127.0.0.1:47761"]
[http]
listen = "127.0.0.1:47780"
[storage]
output_dir = "$W/out"
rotate_bytes = "4GiB"
EOT
build/release/daqd/daqd --config "$W/daqd.toml" --run first-loss --duration 100 --summary-json "$W/summary.json" \
    > "$W/daqd.log" 2>&1 &
daqd_pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:47780/metrics > /dev/null && break; sleep 0.2; done
if ! curl -sf http://127.0.0.1:47780/metrics > /dev/null; then
    echo "first_loss: daqd's /metrics did not answer on 127.0.0.1:47780 (port taken?): see $W/daqd.log" >&2
    kill -TERM "$daqd_pid"; wait "$daqd_pid" || true
    exit 1
fi
build/release/tools/sim/daq-sim --target 127.0.0.1:47760 --target 127.0.0.1:47761 --units 4 --channels 4096 \
    --duration 60 --rate "$RATE" --json "$W/sim.json" --quiet > "$W/sim.log" 2>&1 &
sim_pid=$!
for t in 0 10 20 30 40 50 60; do
    curl -s http://127.0.0.1:47780/metrics |
        grep -E '^daq_thread_cpu_seconds_total|^daq_storage_write_seconds_total|^daq_frames_total\{.*overflow|^daq_socket_drops_total|^daq_ring_dropped_total|^daq_frame_buffer_blocks_free|^daq_storage_bytes_written_total|^daq_storage_chunk' |
        sed "s/^/t=$t /" >> "$W/metrics.txt" || true
    ls -t "$W"/out/*.h5 2>/dev/null | tail -n +3 | xargs -r rm -f
    sleep 10
done
wait "$sim_pid" || true
sleep 3
kill -TERM "$daqd_pid"; wait "$daqd_pid" || true
rm -rf "$W/out"
echo "first_loss: $W/metrics.txt, $W/summary.json, $W/sim.json"
