#!/usr/bin/env python3
"""The alert rules' unit tests: every alert of tools/dashboards/daqd-alerts.yml
has a case in daqd-alerts.test.yml that expects it to fire, and
`promtool test rules` passes them all (each alert fires on its synthetic
series, with the labels and annotations an operator would see).

usage: check_alerts.py PROMTOOL DASHBOARDS_DIR     exit 0 ok, 1 failed, 77 skipped (no promtool)
"""
import subprocess
import sys
from pathlib import Path

import yaml

promtool, dashboards = sys.argv[1], Path(sys.argv[2])
rules = yaml.safe_load((dashboards / "daqd-alerts.yml").read_text())
tests = yaml.safe_load((dashboards / "daqd-alerts.test.yml").read_text())
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
missing = [a for a in alerts if a not in fired]
if missing:
    print(f"FAIL: alerts with no promtool test that expects them to fire: {', '.join(missing)} "
          f"(add a case to {dashboards / 'daqd-alerts.test.yml'})")
    sys.exit(1)
print(f"ok   every alert has a firing test: {', '.join(alerts)}")
if not Path(promtool).exists():
    print(f"SKIPPED: {promtool} not found (Debian package 'prometheus')")
    sys.exit(77)
r = subprocess.run([promtool, "test", "rules", "daqd-alerts.test.yml"], cwd=dashboards, capture_output=True, text=True)
print(r.stdout + r.stderr)
sys.exit(0 if r.returncode == 0 else 1)
