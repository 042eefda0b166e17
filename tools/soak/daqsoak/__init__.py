"""The soak behind tools/soak/daq-soak.py, by role.

- scenario: what the soak asks for (daqd configuration, disk space, warm-up);
- soak: the run itself (start daqd and the run, traffic, samples, stop, clean-up);
- samples: one sample of daqd (/proc and /metrics) and the figures of an interval;
- checks: the verdict;
- report: the table, the final report and the JSON document.

Launching the binaries and reading Prometheus text is daqload.procs
(tools/daqload), shared with daqload.capture and tools/bench/receive_bench.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# daqload.procs without installing daqload: the soak runs from a checkout.
if str(REPO / "tools" / "daqload") not in sys.path:
    sys.path.insert(0, str(REPO / "tools" / "daqload"))

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] daq-soak: {msg}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """The soak could not be set up or run (not a verdict on daqd)."""
