"""What a soak prints and writes: one table row per sample, the final report, the JSON document."""

from __future__ import annotations

from .scenario import GIB, LATENCY_FAMILY, MIB



def fmt_bytes(n: float) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


COLS = [("t s", 7), ("RSS MiB", 8), ("HWM MiB", 8), ("anon", 7), ("shmem", 7), ("fds", 4), ("CPU %", 6),
        ("host %", 6), ("rx kpkt/s", 9), ("wr fr/s", 8), ("lost", 6), ("sockdrp", 7), ("ringdrp", 7),
        ("ovfl", 5), ("lat p50 ms", 10), ("lat p99 ms", 10)]


def print_header() -> None:
    print(" ".join(f"{n:>{w}}" for n, w in COLS), flush=True)


def print_row(s: dict) -> None:
    """One line of the table, as a sample is taken."""
    def mib(k):
        return f"{s[k] / 1024:.1f}" if s.get(k) is not None else "-"
    iv = s.get("interval") or {}
    d = iv.get("delta") or {}
    lat = iv.get("latency")

    def q(k):
        if not lat or lat.get(k) is None:
            return "-" if lat is None else "n/a"
        return (">" if lat.get(k.replace("_ms", "_above_last_bucket")) else "") + f"{lat[k]:.3f}"
    t = f"{s['t']:.1f}" + ("e" if s["label"] == "end" else "")
    vals = [t, mib("rss_kib"), mib("hwm_kib"), mib("anon_kib"), mib("shmem_kib"), str(s.get("fds", "-")),
            f"{iv['cpu_pct']:.0f}" if "cpu_pct" in iv else "-",
            f"{iv['host_busy_pct']:.0f}" if "host_busy_pct" in iv else "-",
            f"{iv['datagrams_per_s'] / 1e3:.1f}" if "datagrams_per_s" in iv else "-",
            f"{iv['frames_written_per_s']:.0f}" if "frames_written_per_s" in iv else "-",
            str(d.get("packets_lost", "-")), str(d.get("socket_drops", "-")), str(d.get("ring_dropped", "-")),
            str(d.get("frames_overflow", "-")), q("p50_ms"), q("p99_ms")]
    if s.get("scrape_error"):
        vals[-1] += f"  (scrape failed: {s['scrape_error'][:60]})"
    print(" ".join(f"{v:>{w}}" for v, (_, w) in zip(vals, COLS)), flush=True)


def print_report(soak) -> None:
    """The figures, the checks and the verdict, after the soak."""
    a = soak.a
    sim, rx = soak.sim_summary, soak.daqd_summary
    mem = soak.result.get("memory", {})
    lat = soak.result.get("latency", {})
    p = print
    p("")
    p(f"daq-soak: {a.duration:g} s asked at {a.rate_mbit:g} Mbit/s, {a.links} link(s), {a.units} units x "
      f"{a.channels} channels, {a.datagram}-byte datagrams, control {a.control}; daqd "
      f"{soak.meta.get('daqd_build_info', {}).get('version', '?')} "
      f"({rx.get('receiver_backend') or soak.meta.get('daqd_build_info', {}).get('receiver_backend', '?')}); "
      f"host {soak.meta['host']} {soak.meta['cpus']} CPUs, load {soak.meta['load_before']} -> "
      f"{soak.meta.get('load_after', '?')}")
    if sim:
        p(f"sent:      {sim.get('packets_sent')} packets, {sim.get('frames_sent')} frames, "
          f"{sim.get('bytes_sent', 0) / 1e9:.2f} GB in {sim.get('seconds', 0):.1f} s = "
          f"{sim.get('rate_mbps', 0):.1f} Mbit/s ({sim.get('mode')}; send_retries={sim.get('send_retries')}, "
          f"send_errors={sim.get('send_errors')}; daq-sim CPU {soak.sim_cpu:.1f} s)")
    if rx:
        inv = ", ".join(f"{k}={v}" for k, v in (rx.get("invalid") or {}).items())
        p(f"received:  {rx.get('packets_received')} packets; lost={rx.get('packets_lost')} "
          f"kernel_drops={rx.get('kernel_drops')} ring_dropped={rx.get('ring_dropped')} "
          f"late={rx.get('late')} duplicates={rx.get('duplicates')} invalid={rx.get('invalid_total')}"
          + (f" ({inv})" if inv else ""))
        p(f"frames:    complete={rx.get('frames_complete')} incomplete={rx.get('frames_incomplete')} "
          f"lost={rx.get('frames_lost')} overflow={rx.get('frames_overflow')} written={rx.get('frames_written')} "
          f"unrecorded={rx.get('frames_unrecorded')} rejected={rx.get('frames_rejected')}; "
          f"{rx.get('bytes_written', 0) / 1e9:.2f} GB written, {len(rx.get('files') or [])} file(s)"
          + (f", run FAILED: {rx.get('run_error')}" if rx.get("run_failed") else ""))
        p(f"daqd CPU:  {soak.daqd_cpu:.1f} s over its life"
          + (f" ({soak.daqd_cpu / (rx['packets_received'] / 1e6):.2f} s per Mpacket)"
             if rx.get("packets_received") else ""))
    p(f"disk:      {'rotated every ' + fmt_bytes(a.rotate_bytes) if a.rotate_bytes else 'one file'}; "
      f"{soak.deleted_files} closed file(s) deleted while running ({soak.deleted_bytes / 1e9:.2f} GB); "
      f"peak in the run directory {soak.peak_run_bytes / 1e9:.2f} GB")
    if mem:
        line = (f"memory:    warm-up {mem['warmup_s']:g} s (ring and the frame buffer's working set touched after ~"
                f"{mem['lazy_commit_s']:g} s); max RSS {mem['max_rss_mib']:.1f} MiB, VmHWM "
                f"{mem['max_hwm_mib']:.1f} MiB")
        if mem.get("baseline_mib") is not None:
            line += (f"; RSS {mem['baseline_mib']:.1f} MiB (t={mem['baseline_t']:g} s) -> {mem['last_mib']:.1f} "
                     f"MiB (t={mem['last_t']:g} s): {mem['growth_mib']:+.2f} MiB, {mem['growth_pct']:+.2f} % "
                     f"(anon {mem.get('anon_growth_mib', 0):+.2f}, shmem {mem.get('shmem_growth_mib', 0):+.2f}, "
                     f"file {mem.get('file_growth_mib', 0):+.2f})")
            if "slope_mib_per_min" in mem:
                line += f"; slope {mem['slope_mib_per_min']:+.3f} MiB/min"
            line += f"; fds {mem['fds'][0]} -> {mem['fds'][1]}, threads {mem['threads'][0]} -> {mem['threads'][1]}"
        p(line)
    if lat.get("present") and lat.get("p99_ms"):
        p(f"latency:   {LATENCY_FAMILY}, {lat['intervals']} intervals after the warm-up: p50 "
          f"{lat['p50_min_ms']:.3f} / {lat['p50_median_ms']:.3f} / {lat['p50_max_ms']:.3f} ms, p99 "
          f"{lat['p99_min_ms']:.3f} / {lat['p99_median_ms']:.3f} / {lat['p99_max_ms']:.3f} ms (min / median / max)")
    elif not lat.get("present"):
        p(f"latency:   {LATENCY_FAMILY} absent from /metrics: not measured")
    p("")
    for c in soak.checks:
        p(f"  {c['result']:4}  {c['name']}: {c['detail']}")
    p(f"\nverdict: {soak.verdict}")


def as_json(soak) -> dict:
    """Everything, for --json."""
    a = soak.a
    return dict(tool="daq-soak", verdict=soak.verdict, checks=soak.checks, settings=vars(a), meta=soak.meta,
                workdir=str(soak.work) if soak.work else None, kept=a.keep,
                daqd_command=getattr(soak, "daqd_cmd", None), sim_command=getattr(soak, "sim_cmd_str", None),
                config=soak.config_path.read_text() if getattr(soak, "config_path", None) and
                soak.config_path.exists() else None,
                effective_config=soak.effective_config, space=getattr(soak, "space", None),
                warmup_s=soak.warmup, samples=soak.samples, memory=soak.result.get("memory"),
                latency=soak.result.get("latency"), losses=getattr(soak, "losses", None),
                sim=soak.sim_summary, daqd=soak.daqd_summary, daqd_exit=soak.daqd_rc,
                daqd_cpu_seconds=soak.daqd_cpu, sim_exit=soak.sim_rc, sim_cpu_seconds=soak.sim_cpu,
                run_start=soak.start_answer, run_stop=soak.stop_answer, errors=soak.errors,
                interrupted=soak.interrupted, aborted=soak.aborted or None,
                disk=dict(deleted_files=soak.deleted_files, deleted_bytes=soak.deleted_bytes,
                          peak_run_dir_bytes=soak.peak_run_bytes),
                daqd_log_warnings=log_warnings(soak))


def log_warnings(soak) -> list[str]:
    """daqd's warning and error lines (the first 50), from its log."""
    if not getattr(soak, "daqd_log", None):
        return []
    try:
        lines = soak.daqd_log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if " warning " in ln or " error " in ln or " critical " in ln][:50]
