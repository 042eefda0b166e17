#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

Deterministic: running it again gives the same files. The committed corpus is
this script's output; scripts/fuzz.sh never writes into it.

  fuzz_daq1    DAQ1 datagram sequences in fuzz_daq1.cpp's input format
               (docs/PROTOCOL.md; header as daq1::encode_header writes it)
  fuzz_config  configuration files: config/example.toml, every TOML block of
               docs/CONFIG.md, and broken ones
  fuzz_http    requests for every route of web/README.md, good and bad

Usage: tests/fuzz/make_corpus.py [OUTPUT_DIR]   (default: tests/fuzz/corpus)
"""
import re
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# ---------------------------------------------------------------- DAQ1

MAGIC = 0x31514144
HEADER = struct.Struct("<IBBHIHHQQII")  # 40 bytes, daq1::encode_header
assert HEADER.size == 40
TEST_PATTERN, EOS = 0x01, 0x02


def header(unit=1, seq=0, index=0, count=1, frame=0, offset=0, frame_bytes=2, flags=TEST_PATTERN,
           magic=MAGIC, version=1, timestamp=None):
    if timestamp is None:
        timestamp = (frame * 1000 + unit) & 0xFFFFFFFFFFFFFFFF
    return HEADER.pack(magic, version, flags, unit, seq & 0xFFFFFFFF, index, count, frame, timestamp, offset,
                       frame_bytes)


def pattern(frame, unit, first_channel, n):
    return b"".join(struct.pack("<H", (frame * 7 + unit * 13 + c) % 65536)
                    for c in range(first_channel, first_channel + n))


class unit_stream:
    """One unit slicing frames of `channels` samples into `datagram`-byte packets."""

    def __init__(self, unit, channels, datagram=512, seq=0):
        self.unit, self.channels, self.datagram, self.seq = unit, channels, datagram, seq
        self.frame_bytes = 2 * channels
        self.slice = min((datagram - 40) & ~1, self.frame_bytes)
        self.count = (self.frame_bytes + self.slice - 1) // self.slice

    def packet(self, frame, index, flags=TEST_PATTERN, seq=None):
        off = index * self.slice
        n = self.slice if index + 1 < self.count else self.frame_bytes - off
        if seq is None:
            seq = self.seq
            self.seq += 1
        return header(self.unit, seq, index, self.count, frame, off, self.frame_bytes, flags) + \
            pattern(frame, self.unit, off // 2, n // 2)

    def frame(self, frame, flags=TEST_PATTERN):
        return [self.packet(frame, i, flags) for i in range(self.count)]


def knobs(learn=True, listed=False, reorder=4, pool=0, gro=False, timeout=2, max_frame=2, written=True,
          few_learned=False):
    """The two configuration bytes of fuzz_daq1.cpp."""
    k0 = (1 if learn else 0) | (2 if listed else 0) | ((reorder - 1) & 7) << 2 | (pool & 3) << 5 | (0x80 if gro else 0)
    k1 = (timeout & 15) | (max_frame & 3) << 4 | (0x40 if written else 0) | (0x80 if few_learned else 0)
    return bytes([k0, k1])


def record(datagram, step=0, link=0, drain=True, segment=None):
    control = (step & 15) | ({0: 0, 1: 1, 2: 2, 17: 3}[link] << 4) | (0x40 if drain else 0)
    if segment is not None:
        control |= 0x80
    out = struct.pack("<HB", len(datagram), control)
    if segment is not None:
        out += struct.pack("<H", segment)
    return out + datagram


def daq1_seeds():
    seeds = {}

    u = unit_stream(1, 1000)  # 5 packets of 472 bytes, the last 112
    seeds["complete_frames"] = knobs() + b"".join(record(p, step=1) for f in range(3) for p in u.frame(f))

    u = unit_stream(1, 1000)
    f0, f1, f2 = u.frame(10), u.frame(11), u.frame(12, flags=TEST_PATTERN | EOS)
    order = [f0[1], f0[0], f1[0], f0[3], f0[2], f0[4], f0[4], f1[2], f1[1], f1[4], f2[0], f2[1], f2[2], f2[3], f2[4]]
    seeds["reorder_duplicate_missing_eos"] = knobs(reorder=2) + b"".join(record(p) for p in order)

    a, b = unit_stream(1, 500, 1472), unit_stream(2, 8)
    stranger = unit_stream(9, 8)
    wrong = unit_stream(2, 16, seq=100)
    seq = []
    for f in range(3):
        seq += [record(p, step=2, link=1) for p in a.frame(f)]
        seq += [record(p, step=2, link=17) for p in b.frame(f)]
    seq += [record(stranger.packet(0, 0)), record(wrong.packet(0, 0))]
    seeds["listed_units_unknown_and_mismatch"] = knobs(learn=False, listed=True) + b"".join(seq)

    u = unit_stream(3, 300, 200)  # 160-byte slices, 4 packets (last 120)
    pk = u.frame(1)
    batch = b"".join(p if len(p) == 200 else p.ljust(200, b"\0") for p in pk[:3])
    bad = bytearray(pk[0])
    bad[0] ^= 0xFF
    seeds["gro_batches"] = knobs(gro=True) + record(batch, segment=200) + record(bytes(bad) + pk[1], segment=200) + \
        record(pk[3]) + record(b"".join(unit_stream(4, 20, 60).frame(0)), segment=60)

    bad = []
    ok = unit_stream(5, 16).packet(0, 0)
    def patch(p, off, fmt, v):
        q = bytearray(p)
        struct.pack_into(fmt, q, off, v)
        return bytes(q)
    bad.append(ok[:41])                              # too_short
    bad.append(patch(ok, 0, "<I", 0x32514144))       # bad_magic
    bad.append(patch(ok, 4, "<B", 2))                # bad_version
    bad.append(patch(ok, 5, "<B", 0x80))             # unknown_flags
    bad.append(patch(ok, 14, "<H", 0))               # zero_packet_count
    bad.append(patch(ok, 12, "<H", 1))               # packet_index_out_of_range
    bad.append(patch(ok, 36, "<I", 0))               # frame_bytes_zero
    bad.append(patch(ok, 36, "<I", 33))              # frame_bytes_odd
    bad.append(patch(ok, 36, "<I", 16 * 1024 * 1024 + 2))  # frame_bytes_too_large
    bad.append(ok + b"\x00")                          # payload_odd
    bad.append(patch(ok, 32, "<I", 1))               # payload_offset_odd
    bad.append(patch(ok, 32, "<I", 2))               # payload_beyond_frame
    bad.append(header(6, 0, 0, 1, 0, 0, 9100) + bytes(9100))  # larger than a 9128-byte slot: truncated
    bad.append(ok)
    seeds["every_drop_reason"] = knobs() + b"".join(record(p, step=1) for p in bad)

    u = unit_stream(7, 1000)
    fr = [u.frame(f) for f in range(4)]
    seq = [record(fr[0][0]), record(fr[0][1]), record(fr[1][0], step=8), record(fr[1][1], step=12),
           record(fr[0][2], step=1), record(fr[2][0], step=15)] + [record(p) for p in fr[3]]
    seeds["timeouts_and_late"] = knobs(timeout=1) + b"".join(seq)

    u = unit_stream(8, 64, 1472)
    seeds["pool_overflow"] = knobs(reorder=8, pool=0) + \
        b"".join(record(p, drain=False) for f in range(20) for p in u.frame(f)) + record(u.packet(20, 0), drain=True)

    u = unit_stream(9, 1000, seq=0xFFFFFFFD)
    frames = [u.frame(f) for f in range(3)]
    u.seq += 9000  # a gap larger than the loss window
    frames.append(u.frame(3))
    seeds["seq_wrap_and_gap"] = knobs(learn=True, reorder=3) + b"".join(record(p) for fr in frames for p in fr)

    u = unit_stream(10, 1000)
    seq = [record(p) for p in u.frame(5)] + [record(p) for p in u.frame(6, flags=TEST_PATTERN | EOS)]
    seq += [record(p) for p in u.frame(0)]  # a new stream restarts the frame numbers
    seeds["end_of_stream_restart"] = knobs() + b"".join(seq)

    u = unit_stream(11, 400)
    p = bytearray(u.packet(0, 1))
    struct.pack_into("<H", p, 14, 7)  # packet_count disagrees with the open frame's
    seeds["layout_mismatch_and_big_unit"] = knobs(max_frame=0) + record(u.packet(0, 0)) + record(bytes(p)) + \
        record(unit_stream(12, 4000, 1472).packet(0, 0))

    # Two learned slots: unit 13 goes quiet, 15 takes its slot, 13 comes back
    # with half its channels (a new stream), then 14 and 15 quiet, 13 again.
    a, b, c = unit_stream(13, 400), unit_stream(14, 64), unit_stream(15, 64)
    half = unit_stream(13, 200, seq=a.seq + 100)
    seq = [record(p, step=1) for f in range(2) for p in a.frame(f)] + [record(p) for p in b.frame(0)]
    seq += [record(p, step=15) for p in c.frame(0)]  # 1.6 s later: 13 idle, its slot goes to 15
    seq += [record(p, step=15, drain=False) for p in half.frame(5)]  # 14 idle: 13 comes back, resized
    seq += [record(p, step=1) for p in half.frame(6)]
    seeds["learned_slots_reclaimed"] = knobs(few_learned=True) + b"".join(seq)
    return {f"{k}.bin": v for k, v in seeds.items()}

# ---------------------------------------------------------------- config


def config_seeds():
    seeds = {"example.toml": (ROOT / "config/example.toml").read_text()}
    doc = (ROOT / "docs/CONFIG.md").read_text()
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", doc, re.S)):
        seeds[f"docs_config_md_{i}.toml"] = block
    seeds["empty.toml"] = ""
    seeds["units_array_of_tables.toml"] = "[[units.list]]\nid = 5\nchannels = 100\n\n[[units.list]]\nid = 6\nchannels = 2\n"
    seeds["sizes_and_strings.toml"] = (
        '[acquisition]\nlisten = "[::1]:5000"\ngro = true\nmax_datagram_bytes = "64KiB"\nexpected_datagram_bytes = "1 KB"\n'
        'ring_name = "lab.2_x-{pid}-{pid}"\n\n[storage]\noutput_dir = "/data/runs \\"quoted\\" \\\\ back\\tslash \u00e9"\n'
        'rotate_bytes = "5TiB"\nchunk_bytes = 4096\n\n[processing]\nstages = ["calibrate", "dose", "live"]\n'
        'backend = "cpu"\ncalibration_file = "runs/ped.calib.h5"\nthreshold = 2.5e1\nthreshold_mode = "absolute"\n'
        'batch_frames = 4096\nlive_interval_ms = 10\n\n[http]\nlisten = "0.0.0.0:8080"\n'
        'token = "0123456789abcdef0123456789abcdef"\n')
    broken = {
        "syntax_error.toml": "[acquisition\nlisten = [\n",
        "unknown_key.toml": "[acquisition]\nbakend = \"io_uring\"\n",
        "unknown_section.toml": "[asembly]\nreorder_frames = 4\n",
        "misplaced_key.toml": "[units]\nreorder_frames = 4\n",
        "wrong_type.toml": "[acquisition]\nbatch = \"64\"\n",
        "not_power_of_two.toml": "[acquisition]\nring_slots = 1000\n",
        "bad_endpoint.toml": "[acquisition]\nlisten = [\"127.0.0.1:4660\", \"localhost\", \"[::1:80\"]\n",
        "duplicate_endpoint.toml": "[acquisition]\nlisten = [\"127.0.0.1:4660\", \"127.000.0.1:4660\"]\n",
        "frame_too_large.toml": "[units]\nlist = [ { id = 1, channels = 40000 } ]\n",
        "unit_twice.toml": "[units]\nlearn = false\nlist = [ { id = 1, channels = 4 }, { id = 1, channels = 8 } ]\n",
        "no_units.toml": "[units]\nlearn = false\n",
        "bad_size.toml": "[assembly]\nmax_frame_bytes = \"1.5GiB\"\n",
        "huge_size.toml": "[storage]\nrotate_bytes = \"99999999999999999999TiB\"\n",
        "gro_needs_65535.toml": "[acquisition]\ngro = true\n",
        "stages_out_of_order.toml": "[processing]\nstages = [\"dose\", \"calibrate\"]\nthreshold = nan\n",
        "public_http_no_token.toml": "[http]\nlisten = \"0.0.0.0:8080\"\n",
        "short_token.toml": "[http]\ntoken = \"short\"\ntoken_file = \"/etc/daqd.token\"\n",
        "section_not_table.toml": "acquisition = 5\n",
        "pool_too_small.toml": "[assembly]\npool_blocks = 5\n[units]\nlist = [ { id = 1, channels = 8 }, { id = 2, channels = 8 }, { id = 3, channels = 8 } ]\n",
        "bad_log_level.toml": "[log]\nlevel = \"verbose\"\n",
        "bad_cpu_lists.toml": "[threads]\nreceiver_cpus = \"0,,1\"\nwriter_cpus = \"3-1\"\nhttp_cpus = \"65535\"\n"
                              "combine_receive_assembly = \"yes\"\n",
        "ring_name_bad.toml": "[acquisition]\nring_name = \".hidden/x\"\n",
    }
    seeds.update(broken)
    return {k: v.encode() for k, v in seeds.items()}

# ---------------------------------------------------------------- HTTP

TOKEN = "0123456789abcdef0123456789abcdef"


def req(method, target, body=b"", auth=None, extra=(), version="1.1", close=True):
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1:8080"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += list(extra)
    if body or method == "POST":
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_seeds():
    bearer = f"Bearer {TOKEN}"
    s = {
        "get_page": req("GET", "/"),
        "get_app_js": req("GET", "/app.js"),
        "get_style_css": req("GET", "/style.css", version="1.0"),
        "get_favicon": req("GET", "/favicon.ico"),
        "get_metrics": req("GET", "/metrics"),
        "get_status": req("GET", "/api/v1/status?pretty=1"),
        "get_runs": req("GET", "/api/v1/runs"),
        "start_run": req("POST", "/api/v1/runs", b'{"name": "beam01"}', bearer),
        "start_run_no_token": req("POST", "/api/v1/runs", b'{"name": "beam01"}'),
        "start_run_wrong_token": req("POST", "/api/v1/runs", b'{"name": "beam01"}', "Bearer 0123456789abcdef0123456789abcdeX"),
        "start_run_bad_json": req("POST", "/api/v1/runs", b'{"name": ', "bearer  " + TOKEN + " "),
        "start_run_bad_name": req("POST", "/api/v1/runs", b'{"name": "../etc"}', bearer),
        "start_run_not_object": req("POST", "/api/v1/runs", b'["beam01"]', bearer),
        "start_run_existing": req("POST", "/api/v1/runs", b'{"name": "old"}', bearer),
        "start_run_pipeline_fails": req("POST", "/api/v1/runs", b'{"name": "will-fail"}', bearer),
        "stop_run_none_active": req("POST", "/api/v1/runs/stop", auth=bearer),
        "stop_run_no_token": req("POST", "/api/v1/runs/stop"),
        "live_unit_1": req("GET", "/api/v1/units/1/live"),
        "live_unit_2": req("GET", "/api/v1/units/2/live"),
        "live_unknown_unit": req("GET", "/api/v1/units/65535/live"),
        "live_bad_unit": req("GET", "/api/v1/units/99999/live"),
        "live_not_a_number": req("GET", "/api/v1/units/x1/live"),
        "wrong_method": req("DELETE", "/metrics"),
        "wrong_method_runs": req("PUT", "/api/v1/runs", b"{}"),
        "unknown_path": req("GET", "/api/v2/nothing#frag"),
        "keep_alive_sequence": (req("POST", "/api/v1/runs", b'{"name": "r7"}', bearer, close=False)
                                + req("GET", "/api/v1/status", close=False)
                                + req("GET", "/api/v1/runs", close=False)
                                + req("POST", "/api/v1/runs", b'{"name": "r8"}', bearer, close=False)
                                + req("POST", "/api/v1/runs/stop", auth=bearer, close=False)
                                + req("GET", "/metrics")),
        "chunked_body": (b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: " + bearer.encode()
                         + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"nam\r\n0d\r\ne\": \"chunk1\"}\r\n0\r\n\r\n"),
        "body_too_large": b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n{",
        "header_too_large": b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 17000 + b"\r\n\r\n",
        "malformed_request_line": b"GET\r\n\r\n",
        "bad_method_token": b"G(T / HTTP/1.1\r\n\r\n",
        "bad_version": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "bad_header": b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "truncated_request": b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1",
        "truncated_body": b"POST /api/v1/runs HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"na",
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }
    return {k + ".http": v for k, v in s.items()}

# ---------------------------------------------------------------- main


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    total = 0
    for target, seeds in (("fuzz_daq1", daq1_seeds()), ("fuzz_config", config_seeds()), ("fuzz_http", http_seeds())):
        d = out / target
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for name, data in sorted(seeds.items()):
            (d / name).write_bytes(data)
            total += len(data)
        print(f"{d}: {len(seeds)} files, {sum(map(len, seeds.values()))} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
