#!/usr/bin/env python3
"""Loopback self-check for daq-sim: receives DAQ1 datagrams, validates them
(same rules as daq1::validate, test pattern, seq, frames) and compares what
arrived with daq-sim's summary JSON.

usage: check_sim.py PORT [--v6] -- path/to/daq-sim --target 127.0.0.1:PORT [args...]

Python is slow: keep --rate low (e.g. 20) for anything but tiny runs, or the
receive buffer overflows and the check reports (receiver-side) losses."""
import socket, struct, sys, subprocess, json, time, collections, select

port = int(sys.argv[1]); simargs = sys.argv[sys.argv.index('--')+1:]
fam = socket.AF_INET6 if '--v6' in sys.argv else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
s.bind(('::1' if fam == socket.AF_INET6 else '127.0.0.1', port))
simargs = [a for a in simargs if a != '--v6']
p = subprocess.Popen(simargs, stdout=subprocess.PIPE)
HDR = struct.Struct('<IBBHIHHQQII')
reasons = collections.Counter()
seen = collections.defaultdict(set)     # unit -> seqs
maxseq = {}                             # unit -> last seq (unwrapped)
frames = collections.defaultdict(lambda: collections.defaultdict(set))  # unit -> frame -> indices
fcount = {}
dups = 0; reord = 0; datagrams = 0; nbytes = 0; eos_units = set(); bad_pattern = 0
seq_ok = True
def reason(d):
    if len(d) < 42: return 'too_short'
    m, v, fl, u, seq, idx, cnt, fn, ts, off, fb = HDR.unpack_from(d)
    if m != 0x31514144: return 'bad_magic'
    if v != 1: return 'bad_version'
    if fl & ~3: return 'unknown_flags'
    if cnt == 0: return 'zero_packet_count'
    if idx >= cnt: return 'packet_index_out_of_range'
    if fb == 0: return 'frame_bytes_zero'
    if fb & 1: return 'frame_bytes_odd'
    if fb > 16 << 20: return 'frame_bytes_too_large'
    pl = len(d) - 40
    if pl & 1: return 'payload_odd'
    if off & 1: return 'payload_offset_odd'
    if off + pl > fb: return 'payload_beyond_frame'
    return None
deadline = None
while True:
    r, _, _ = select.select([s], [], [], 0.5)
    if not r:
        if p.poll() is not None:
            if deadline is None: deadline = time.time() + 1.0
            elif time.time() > deadline: break
        continue
    d = s.recv(65536)
    datagrams += 1; nbytes += len(d)
    why = reason(d)
    if why:
        reasons[why] += 1; continue
    m, v, fl, u, seq, idx, cnt, fn, ts, off, fb = HDR.unpack_from(d)
    if seq in seen[u]: dups += 1; continue
    if u in maxseq and ((seq - maxseq[u]) & 0xffffffff) > 0x80000000: reord += 1
    else: maxseq[u] = seq
    seen[u].add(seq)
    frames[u][fn].add(idx); fcount[u] = cnt
    if fl & 1:
        n = (len(d) - 40) // 2
        samples = struct.unpack_from('<%dH' % n, d, 40)
        c0 = off // 2
        for j, x in enumerate(samples):
            if x != (fn * 7 + u * 13 + c0 + j) % 65536: bad_pattern += 1; break
    else:
        if any(d[40:]): bad_pattern += 1
    if fl & 2: eos_units.add(u)
out = p.communicate()[0]
sim = json.loads(out)
inj = sim['injected']
complete = incomplete = lost_frames = 0
for pu in sim['per_unit']:
    u = pu['unit']; fr = frames[u]
    for f in range(pu['first_frame'], pu['last_frame'] + 1):
        k = len(fr.get(f, ()))
        if k == sim['packets_per_frame']: complete += 1
        elif k == 0: lost_frames += 1
        else: incomplete += 1
got_packets = sum(len(v) for v in seen.values())
res = dict(datagrams=(datagrams, sim['datagrams_sent']), bytes=(nbytes, sim['bytes_sent']),
           packets=(got_packets, sim['packets_sent']), dups=(dups, inj['duplicates']),
           reordered=(reord, inj['reordered']), malformed=(dict(reasons), {k: v for k, v in inj['malformed'].items() if v}),
           complete=(complete, inj['frames_complete']), incomplete=(incomplete, inj['frames_incomplete']),
           frames_lost=(lost_frames, inj['frames_lost']), eos_units=(len(eos_units), sim['units']),
           bad_pattern=(bad_pattern, 0))
ok = True
for k, (a, b) in res.items():
    flag = 'OK ' if a == b else 'BAD'
    if a != b: ok = False
    print(f'{flag} {k}: received {a} expected {b}')
print('send_errors', sim['send_errors'], 'retries', sim['send_retries'], 'mode', sim['mode'], 'seconds', sim['seconds'])
sys.exit(0 if ok else 1)
