"""The verdict of a soak: clean run, zero loss, offered rate, scrapes answered, RSS growth, latency p99 steady."""

from __future__ import annotations

import statistics

from .scenario import LATENCY_FAMILY


def evaluate(soak) -> None:
    """Judges the soak: sets soak.checks, soak.losses, soak.result (memory, latency) and soak.verdict."""
    a = soak.a
    sim, rx = soak.sim_summary, soak.daqd_summary
    checks = []

    def check(name, ok, detail):
        checks.append(dict(name=name, result="SKIP" if ok is None else ("PASS" if ok else "FAIL"),
                           detail=detail))

    # Clean shutdown and complete data.
    ok_proc = not soak.errors and soak.daqd_rc == 0 and bool(rx) and bool(sim)
    check("clean run", ok_proc, "daq-sim and daqd ran to the end and exited 0; summaries read" if ok_proc
          else "; ".join(soak.errors) or f"daqd exit {soak.daqd_rc}")

    # Loss.
    sent = int(sim.get("packets_sent", 0)) if sim else None
    loss_keys = ("packets_lost", "kernel_drops", "ring_dropped", "frames_overflow", "frames_incomplete",
                 "frames_lost", "late", "duplicates", "invalid_total")
    losses = {k: rx.get(k, 0) for k in loss_keys if rx.get(k, 0)}
    received = rx.get("packets_received")
    missing = (sent - received) if (sent is not None and received is not None) else None
    if missing:
        losses["missing (sent - received)"] = missing
    frames_sent = int(sim.get("frames_sent", 0)) if sim else None
    if rx and frames_sent is not None and rx.get("frames_written") != frames_sent:
        losses["frames not written (sent - written)"] = frames_sent - rx.get("frames_written", 0)
    if rx.get("frames_unrecorded"):
        losses["frames_unrecorded"] = rx["frames_unrecorded"]
    if rx.get("run_failed"):
        losses["run_failed"] = rx.get("run_error") or True
    soak.losses = losses
    if not rx or not sim:
        check("zero loss", None, "no daqd or daq-sim summary")
    else:
        check("zero loss", not losses,
              f"sent {sent} packets / {frames_sent} frames, received {received}, written "
              f"{rx.get('frames_written')} frames" + (": " + ", ".join(f"{k}={v}" for k, v in losses.items())
                                                      if losses else ", no drop of any kind"))

    # Offered rate.
    if sim:
        got = float(sim.get("rate_mbps", 0))
        check("offered rate", got >= a.min_rate_fraction * a.rate_mbit,
              f"daq-sim sent {got:.1f} Mbit/s of {a.rate_mbit:g} asked (needs >= "
              f"{100 * a.min_rate_fraction:.0f} %; below that the sender, not daqd, set the pace)"
              + (f"; send_retries={sim.get('send_retries')}" if sim.get("send_retries") else ""))

    # Scrapes.
    check("metrics answered", soak.scrape_failures == 0,
          f"{soak.scrape_failures} failed scrapes of {len(soak.samples)} samples" if soak.scrape_failures
          else f"all {len(soak.samples)} scrapes answered (slowest "
               f"{max((s.get('scrape_seconds', 0) for s in soak.samples), default=0) * 1e3:.0f} ms)")

    # Memory.
    mem = memory_figures(soak)
    soak.result["memory"] = mem
    if mem.get("baseline_mib") is None:
        check("RSS growth", None, f"no sample after the warm-up of {soak.warmup:g} s and before the last one "
              f"(run longer, or set --warmup)")
    else:
        check("RSS growth", mem["growth_mib"] <= mem["limit_mib"],
              f"{mem['baseline_mib']:.1f} MiB at t={mem['baseline_t']:g} s -> {mem['last_mib']:.1f} MiB at "
              f"t={mem['last_t']:g} s: {mem['growth_mib']:+.1f} MiB ({mem['growth_pct']:+.2f} %), limit "
              f"{mem['limit_mib']:.1f} MiB (max of {a.rss_growth_pct:g} % and {a.rss_growth_mib:g} MiB)")

    # Latency.
    lat = latency_figures(soak)
    soak.result["latency"] = lat
    if not lat.get("present"):
        check("latency p99 steady", None, f"{LATENCY_FAMILY} is not exported by this daqd")
    elif len(lat["p99_ms"]) < 2:
        check("latency p99 steady", None, f"fewer than 2 intervals after the warm-up with >= "
              f"{a.latency_min_count} frames")
    else:
        ok = lat["p99_max_ms"] <= a.latency_p99_factor * lat["p99_median_ms"]
        check("latency p99 steady", ok,
              f"interval p99 median {lat['p99_median_ms']:.3f} ms, max {lat['p99_max_ms']:.3f} ms "
              f"(at t={lat['p99_max_t']:g} s) = {lat['p99_max_ms'] / max(lat['p99_median_ms'], 1e-12):.2f} x "
              f"median, limit {a.latency_p99_factor:g} x"
              + ("; some p99 beyond the last finite bucket (a lower bound)" if lat["above_last_bucket"] else ""))
    soak.checks = checks
    if soak.interrupted:
        soak.verdict = "INTERRUPTED"
    elif any(c["result"] == "FAIL" for c in checks):
        soak.verdict = "FAIL"
    else:
        soak.verdict = "PASS"


def traffic_samples(samples: list[dict]) -> list[dict]:
    """The samples taken while daq-sim sent (not 'before', not 'end') that read /proc."""
    return [s for s in samples if s["label"] == "" and s.get("rss_kib") is not None]


def memory_figures(soak) -> dict:
    """RSS from the first sample after the warm-up to the last one, its split and slope; fds and threads."""
    a = soak.a
    all_s = [s for s in soak.samples if s.get("rss_kib") is not None]
    out: dict = dict(warmup_s=round(soak.warmup, 1), lazy_commit_s=round(getattr(soak, "touch_seconds", 0), 1),
                     max_rss_mib=round(max((s["rss_kib"] for s in all_s), default=0) / 1024, 1),
                     max_hwm_mib=round(max((s.get("hwm_kib") or 0 for s in all_s), default=0) / 1024, 1))
    traffic = traffic_samples(soak.samples)
    after = [s for s in traffic if s["t"] >= soak.warmup]
    end = [s for s in all_s if s["label"] == "end"]
    last = end[-1] if end else (after[-1] if after else None)
    if len(after) < 1 or last is None or last is after[0]:
        # Judging RSS before daqd has touched its pool and ring would report lazy commit as a leak.
        out["baseline_mib"] = None
        return out
    base = after[0]
    growth = (last["rss_kib"] - base["rss_kib"]) / 1024
    out.update(baseline_t=base["t"], baseline_mib=round(base["rss_kib"] / 1024, 1), last_t=last["t"],
               last_mib=round(last["rss_kib"] / 1024, 1), growth_mib=round(growth, 2),
               growth_pct=round(100 * growth / (base["rss_kib"] / 1024), 3),
               limit_mib=round(max(a.rss_growth_mib, a.rss_growth_pct / 100 * base["rss_kib"] / 1024), 1))
    for k in ("anon_kib", "shmem_kib", "file_kib"):
        if base.get(k) is not None and last.get(k) is not None:
            out[k.replace("_kib", "_growth_mib")] = round((last[k] - base[k]) / 1024, 2)
    pts = [(s["t"], s["rss_kib"] / 1024) for s in after]
    if len(pts) >= 3:
        mt = statistics.fmean(t for t, _ in pts)
        mr = statistics.fmean(r for _, r in pts)
        den = sum((t - mt) ** 2 for t, _ in pts)
        if den > 0:
            out["slope_mib_per_min"] = round(60 * sum((t - mt) * (r - mr) for t, r in pts) / den, 3)
    fds = [s.get("fds") for s in (base, last)]
    thr = [s.get("threads") for s in (base, last)]
    out.update(fds=fds, threads=thr)
    return out


def latency_figures(soak) -> dict:
    """p50 and p99 of each interval after the warm-up with enough frames, and their min / median / max."""
    a = soak.a
    present = any(s.get("latency_hist") is not None for s in soak.samples)
    out: dict = dict(present=present, p50_ms=[], p99_ms=[], above_last_bucket=False)
    if not present:
        return out
    rows = []
    for s in traffic_samples(soak.samples):
        lat = (s.get("interval") or {}).get("latency")
        if s["t"] >= soak.warmup and lat and lat["count"] >= a.latency_min_count and lat["p99_ms"] is not None:
            rows.append((s["t"], lat))
    if not rows:
        return out
    p50 = [r["p50_ms"] for _, r in rows]
    p99 = [r["p99_ms"] for _, r in rows]
    t_max, r_max = max(rows, key=lambda x: x[1]["p99_ms"])
    out.update(p50_ms=p50, p99_ms=p99, intervals=len(rows),
               p50_min_ms=min(p50), p50_median_ms=statistics.median(p50), p50_max_ms=max(p50),
               p99_min_ms=min(p99), p99_median_ms=statistics.median(p99), p99_max_ms=max(p99), p99_max_t=t_max,
               above_last_bucket=any(r["p99_above_last_bucket"] for _, r in rows))
    return out
