#!/usr/bin/env bash
# ThreadSanitizer over the threaded parts: the worker thread shape
# (test_common), the packet ring and receiver (test_acquisition), the assembler thread (test_processing), the processing
# thread (test_stages, test_processing_storage) and the writer thread
# (test_storage). Builds only those (the `tsan` preset), runs each; any data
# race or lock-order report fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$(nproc)"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
for t in common/test_common acquisition/test_acquisition processing/test_processing processing/test_stages \
         processing/test_processing_storage storage/test_storage; do
  echo "tsan: $t"
  build/tsan/tests/$t
done
echo "tsan: no data race reported"
