#!/usr/bin/env bash
# Builds the `fuzz` preset (clang, libFuzzer, ASan + UBSan) and runs every fuzz
# target of tests/fuzz for SECONDS each (default 60), one after the other.
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="fuzz_http" scripts/fuzz.sh 300    # only some targets
#   FUZZ_PARALLEL=2 scripts/fuzz.sh                 # two targets at a time
#
# Each target starts from a temporary copy of its committed corpus
# (tests/fuzz/corpus/<target>/) and saved crash inputs
# (tests/fuzz/regressions/<target>/); nothing is written into tests/.
# A crash, sanitizer report, timeout or out-of-memory input is saved under
# build/fuzz/crashes/<target>/ and makes the script exit non-zero. Logs:
# build/fuzz/logs/<target>.log. How to keep a crash as a regression test:
# tests/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi
targets=(${FUZZ_TARGETS:-fuzz_daq1 fuzz_config fuzz_http})
parallel="${FUZZ_PARALLEL:-1}"
jobs="${FUZZ_BUILD_JOBS:-2}"

for tool in clang clang++ cmake ninja; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool not found (scripts/install-deps.sh installs it)" >&2; exit 2; }
done

build=build/fuzz
echo "fuzz: configuring and building the fuzz preset into $build (-j $jobs)"
start=$(date +%s)
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs" --target "${targets[@]}"
echo "fuzz: build took $(( $(date +%s) - start )) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/daqd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
touch "$work/.start"
mkdir -p "$build/crashes" "$build/logs"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

# Runs one target; writes "<target> <executions> <status>" to $work/<target>.result.
run_target() {
  local t="$1"
  local corpus="$work/$t/corpus" crashes="$root/$build/crashes/$t" log="$root/$build/logs/$t.log"
  echo "$t 0 ERROR(setup)" >"$work/$t.result"
  mkdir -p "$corpus" "$crashes"
  cp -r "tests/fuzz/corpus/$t/." "$corpus/"
  if [ -d "tests/fuzz/regressions/$t" ]; then
    find "tests/fuzz/regressions/$t" -maxdepth 1 -type f ! -name '.*' ! -name 'README*' -exec cp {} "$corpus/" \;
  fi
  local before
  before=$(find "$crashes" -type f | wc -l)
  local rc=0
  # -timeout: one input running longer than this is reported (and saved) as a hang.
  (cd "$work/$t" && "$root/$build/tests/fuzz/$t" corpus \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 \
      -artifact_prefix="$crashes/") >"$log" 2>&1 || rc=$?
  local execs
  execs=$(awk '/stat::number_of_executed_units:/ {n = $2} END {print n + 0}' "$log")
  local after
  after=$(find "$crashes" -type f | wc -l)
  local status="ok"
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then status="CRASHED(rc=$rc)"; fi
  echo "$t $execs $status" >"$work/$t.result"
}

echo "fuzz: running ${targets[*]} for $seconds s each ($parallel at a time)"
running=0
for t in "${targets[@]}"; do
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
printf '\n%-12s %14s  %s\n' target executions result
for t in "${targets[@]}"; do
  read -r name execs status <"$work/$t.result"
  printf '%-12s %14s  %s\n' "$name" "$execs" "$status"
  if [ "$status" != "ok" ]; then
    failed=1
    echo "    log: $build/logs/$t.log"
    grep -m1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|fuzz invariant failed|Assertion' \
      "$build/logs/$t.log" | sed 's/^/    /' || true
    find "$build/crashes/$t" -type f -newer "$work/.start" | sed 's/^/    input: /'
  fi
done
exit "$failed"
