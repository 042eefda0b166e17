"""What a soak asks of daqd and daq-sim: the daqd configuration, the disk it needs, the warm-up."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from daqload.procs import free_bytes

from . import SetupError

MIB = 2**20
GIB = 2**30
LATENCY_FAMILY = "daq_frame_latency_seconds"
FLUSH_FAMILY = "daq_storage_flush_seconds"
RUN_NAME = "soak"


def size_arg(v: str) -> int:
    """Bytes: an integer with an optional K/M/G/T suffix (powers of 1024; 'KiB', 'MB' and 'GiB' spellings too)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", v, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {v!r} (e.g. 4G, 512MiB, 1073741824)")
    return int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())


def expected_bytes(a) -> float:
    return a.rate_mbit * 1e6 / 8 * a.duration


def check_space(a, work: Path) -> dict:
    """The disk figures of the soak (for the JSON); SetupError when the work directory's file system is too small."""
    free = free_bytes(work)
    expected = expected_bytes(a)
    rotating = a.rotate_bytes > 0 and not a.keep
    # Rotating and deleting closed files: at most the open file, the last closed one, and one being deleted.
    need = min(expected, 3 * a.rotate_bytes) if rotating else expected * 1.02
    space = dict(workdir=str(work), free_bytes=free, expected_run_bytes=int(expected),
                 needed_bytes=int(need), reserve_bytes=a.min_free, rotating_and_deleting=rotating)
    if need + a.min_free > free:
        how = ("closed rotated files are deleted as the run goes, so it needs about 3 x --rotate-bytes"
               if rotating else "every run file is kept until the end" + (" (--keep)" if a.keep else
                                                                           " (--rotate-bytes 0)"))
        raise SetupError(
            f"not enough disk: a {a.duration:g} s run at {a.rate_mbit:g} Mbit/s writes about "
            f"{expected / 1e9:.1f} GB; {how}: {need / 1e9:.1f} GB + {a.min_free / 1e9:.1f} GB spare, but "
            f"{work} has {free / 1e9:.1f} GB free. Use a lower --rate-mbit or --duration, a --workdir on a "
            f"larger disk" + (", or drop --keep (files are then rotated and deleted while running)" if a.keep
                              else ", or a smaller --rotate-bytes"))
    return space


def config_text(a, udp_ports: list[int], http_port: int, out: Path) -> str:
    """daqd.toml for the soak: its loopback ports, output directory and ring names, plus --backend and --set."""
    tables: dict[str, dict[str, str]] = {
        "acquisition": {"listen": "[" + ", ".join(f'"127.0.0.1:{p}"' for p in udp_ports) + "]",
                        "ring_name": f'"daqd-soak-{os.getpid()}-{{pid}}"'},
        "storage": {"output_dir": json.dumps(str(out)), "rotate_bytes": str(a.rotate_bytes)},
        "http": {"listen": f'"127.0.0.1:{http_port}"'},
        "log": {"level": '"info"'},
    }
    if a.backend:
        tables["acquisition"]["backend"] = json.dumps(a.backend)
    owned = {"acquisition.listen", "storage.output_dir", "http.listen", "acquisition.ring_name"}
    for kv in a.set or []:
        key, sep, value = kv.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or "." not in key:
            raise SetupError(f"--set {kv!r}: expected TABLE.KEY=VALUE, e.g. assembly.buffer_seconds=4")
        if key in owned:
            raise SetupError(f"--set {key}: the soak tool sets this key itself")
        table, _, k = key.partition(".")
        if not re.fullmatch(r"-?\d+(\.\d+)?|true|false|\[.*\]|\{.*\}|\".*\"|'.*'", value):
            value = json.dumps(value)  # a bare word: a string
        tables.setdefault(table, {})[k] = value
    lines = ["# written by tools/soak/daq-soak.py for one soak run"]
    for t, kv in tables.items():
        lines.append(f"\n[{t}]")
        lines += [f"{k} = {v}" for k, v in kv.items()]
    return "\n".join(lines) + "\n"


def frames_per_second(a) -> float:
    frame_bytes = 2 * a.channels
    per_packet = (a.datagram - 40) // 2 * 2
    packets = max(1, -(-frame_bytes // per_packet))
    wire = frame_bytes + 40 * packets
    return a.rate_mbit * 1e6 / 8 / wire


# Seconds for the frame buffer's working set: it hands out the most recently freed block first, so a
# steady run touches only the blocks its backlog needs, and does so early (flushes, the first rotation).
FRAME_BUFFER_WORKING_SET_S = 2.0


def lazy_commit_seconds(a, effective_config: dict) -> float:
    """Seconds of traffic before daqd has touched the memory a steady run uses.

    daqd commits memory lazily. Each receive shard's packet ring is touched slot after slot, so all of it
    only after ring_slots datagrams went through it; the ring of the shard with the fewest links takes
    longest. The frame buffer reuses the most recently freed blocks (processing/README.md "The frame
    buffer: one copy"), so its size (assembly.buffer_seconds) does not matter here: FRAME_BUFFER_WORKING_SET_S
    covers the blocks a steady run's backlog needs. Until then RSS rises without any leak.
    """
    acq = effective_config.get("acquisition", {})
    slots = int(acq.get("ring_slots", 16384))
    shards = max(1, min(int(acq.get("shards", 1)), a.links))
    fps = max(1e-9, frames_per_second(a))
    packets_per_s = fps * max(1, -(-2 * a.channels // ((a.datagram - 40) // 2 * 2)))
    fewest_links = a.links // shards  # links are split in listen order; the first groups get the extra ones
    return slots / (packets_per_s * fewest_links / a.links) + FRAME_BUFFER_WORKING_SET_S


def choose_warmup(a, touch_seconds: float) -> float:
    """Seconds after daq-sim starts before the RSS baseline and the latency steadiness window: --warmup, or
    twice the lazy-commit time (and at least min(30 s, duration/4))."""
    if a.warmup is not None:
        return a.warmup
    return max(min(30.0, a.duration / 4), 2 * touch_seconds)
