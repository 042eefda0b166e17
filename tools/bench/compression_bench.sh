#!/usr/bin/env bash
# Sustained recording with and without compression (docs/PERFORMANCE.md,
# "Compressed runs: sustained recording (issue 12)"): for each RATE (Mbit/s)
# and each storage.compression, daqd (build/release) records 4 units of 4096
# channels over 2 loopback links of `daq-sim --detector --beam` data for
# SECONDS (default 60), then `daq-disk-ceiling` measures the disk in the same
# run. One line per trial: frames sent and written, losses (every drop
# counter), MB/s of frame data, MB/s stored and the ratio, the CPU seconds
# per second of each daqd thread. Closed run files are deleted as it goes;
# daqd has a --duration backstop. Fixed loopback ports 47860-47861, 47880.
# Usage: tools/bench/compression_bench.sh "RATE [RATE...]" ["none bslz4"] [SECONDS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${1:?usage: $0 \"RATE [RATE...]\" [\"none bslz4\"] [SECONDS] [WORKDIR]}
MODES=${2:-none bslz4}
SECONDS_RUN=${3:-60}
W=${4:-${TMPDIR:-/tmp}/daqd-compression-bench}
rm -rf "$W"; mkdir -p "$W"
metric() {  # name [label filter]: the sum of a family's samples in a /metrics text
    awk -v n="$1" -v f="${2:-}" '$1 ~ "^"n"({|$)" && index($1, f) { s += $2 } END { printf "%.0f", s }' "$3"
}
cpu() {  # thread name: CPU seconds in a /metrics text
    awk -v t="$1" '$1 ~ "^daq_thread_cpu_seconds_total" && index($1, "thread=\""t"\"") { s += $2 } END { printf "%.1f", s }' "$2"
}
printf '%-6s %-6s %10s %10s %8s %9s %9s %6s %s\n' rate mode sent written lost "MB/s" "MB/s disk" ratio "CPU s/s by thread"
for rate in $RATES; do
    for mode in $MODES; do
        T="$W/$mode-$rate"; mkdir -p "$T/out"
        cat > "$T/daqd.toml" <<EOT
[acquisition]
listen = ["127.0.0.1:47860", "127.0.0.1:47861"]
expected_rate_mbps = $rate
[http]
listen = "127.0.0.1:47880"
[storage]
output_dir = "$T/out"
rotate_bytes = "2GiB"
compression = "$mode"
EOT
        build/release/daqd/daqd --config "$T/daqd.toml" --run bench --duration $((SECONDS_RUN + 40)) \
            --summary-json "$T/summary.json" > "$T/daqd.log" 2>&1 &
        daqd_pid=$!
        for _ in $(seq 50); do curl -sf http://127.0.0.1:47880/metrics > /dev/null && break; sleep 0.2; done
        curl -sf http://127.0.0.1:47880/metrics > "$T/m0.txt" || { echo "daqd did not start: $T/daqd.log" >&2; exit 1; }
        build/release/tools/sim/daq-sim --target 127.0.0.1:47860 --target 127.0.0.1:47861 --units 4 --channels 4096 \
            --detector --beam --detector-cycle 64 --duration "$SECONDS_RUN" --rate "$rate" --json "$T/sim.json" --quiet > "$T/sim.log" 2>&1 &
        sim_pid=$!
        while kill -0 "$sim_pid" 2> /dev/null; do
            ls -t "$T"/out/*.h5 2>/dev/null | tail -n +3 | xargs -r rm -f
            sleep 2
        done
        wait "$sim_pid" || true
        sleep 3
        curl -sf http://127.0.0.1:47880/metrics > "$T/m1.txt"
        kill -TERM "$daqd_pid"; wait "$daqd_pid" || true
        sent=$(/usr/bin/python3 -c "import json; print(json.load(open('$T/sim.json'))['frames_sent'])" 2>/dev/null || echo "?")
        m=$T/m1.txt
        written=$(metric daq_frames_written_total "" "$m")
        lost=$(( $(metric daq_socket_drops_total "" "$m") + $(metric daq_ring_dropped_total "" "$m") + \
                 $(metric daq_frames_total 'state="overflow"' "$m") + $(metric daq_packets_lost_total "" "$m") ))
        bytes=$(metric daq_storage_bytes_written_total "" "$m")
        if [ "$mode" = bslz4 ]; then stored=$(metric daq_compress_bytes_out_total "" "$m"); else stored=$bytes; fi
        threads=$(awk -F'"' '/^daq_thread_cpu_seconds_total/ { print $2 }' "$m" | sort -u | while read -r t; do
            printf '%s=%.2f ' "${t#daqd-}" "$(echo "$(cpu "$t" "$m") / $SECONDS_RUN" | bc -l)"; done)
        comp=$(awk '/^daq_compress_seconds_total/ { printf "compress=%.2f", $2 / '"$SECONDS_RUN"' }' "$m")
        printf '%-6s %-6s %10s %10s %8s %9.1f %9.1f %6.2f %s %s\n' "$rate" "$mode" "$sent" "$written" "$lost" \
            "$(echo "$bytes / $SECONDS_RUN / 1000000" | bc -l)" "$(echo "$stored / $SECONDS_RUN / 1000000" | bc -l)" \
            "$(echo "$bytes / ($stored + 1)" | bc -l)" "$threads" "$comp"
        rm -rf "$T/out"
    done
done
build/release/tools/bench/daq-disk-ceiling --dir "$W" --bytes 4G | tail -1
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); logs in $W"
