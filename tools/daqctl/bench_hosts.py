"""Several daqd on loopback for daqctl's benchmarks (bench_skew.py, bench_long_run.py).

start_hosts() starts N daqd processes (distinct UDP and HTTP ports, one output
directory each, one token file) and returns them as daqctl Hosts once each
answers on HTTP.
"""

import os
import socket

from daqctl import Host
from daqload.procs import Children, daqd_argv, free_ports, http, wait_ready


def start_hosts(bins, n, base, token_text, *, config_extra=""):
    """(children, daqd processes, [Host], UDP ports); the caller stops them (procs.stop, children.stop_all)."""
    token = os.path.join(base, "token")
    with open(token, "w") as f:
        f.write(token_text + "\n")
    os.chmod(token, 0o600)
    udp, web = free_ports(socket.SOCK_DGRAM, n), free_ports(socket.SOCK_STREAM, n)
    kids = Children(die_with_parent=True)
    procs, hosts = [], []
    for i in range(n):
        out = os.path.join(base, f"h{i}")
        os.makedirs(out, exist_ok=True)
        cfg = os.path.join(base, f"h{i}.toml")
        with open(cfg, "w") as f:
            f.write(f'[http]\ntoken_file = "{token}"\n' + config_extra)
        log = open(os.path.join(base, f"daqd-h{i}.log"), "wb")
        p = kids.spawn(daqd_argv(bins["daqd"], config=cfg, listen=[f"127.0.0.1:{udp[i]}"], output=out,
                                 http=f"127.0.0.1:{web[i]}"), stdout=log, stderr=log)
        procs.append(p)
        url = f"http://127.0.0.1:{web[i]}"
        wait_ready(p, lambda: http("GET", url + "/api/v1/status", 2)[0] == 200, 30, what=f"daqd h{i}",
                   goal="answer on HTTP", log_path=log.name)
        hosts.append(Host(url, token_file=token, tag=f"h{i}", output_dir=out))
    return kids, procs, hosts, udp
