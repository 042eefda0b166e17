#!/usr/bin/env python3
"""Every Catch2 test name must reach ctest whole: CMake splits a test name at ';'
(a list separator), and ctest then runs a filter that matches no test case and
passes. A name that starts with '-' is read by Catch as an option ("Unrecognised
token") and fails. Lists the TEST_CASE names (string literals joined across
lines) that hold a ';' or start with '-' and exits 1 if there is any."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent
bad = []
for path in sorted(root.rglob("*.cpp")):
    text = path.read_text(errors="replace")
    for m in re.finditer(r'TEST_CASE\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', text):
        name = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
        if ";" in name or name.startswith("-"):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path.relative_to(root.parent)}:{line}: {name}")
for b in bad:
    print(b)
print(f"{len(bad)} test name(s) with ';' (ctest would cut them there and run nothing) or a leading '-' (an option "
      "to Catch)" if bad else "no test name holds ';' or starts with '-'")
sys.exit(1 if bad else 0)
