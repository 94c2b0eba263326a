"""The test suite's duration against an older commit's, in a paired run: each commit is
cloned fresh and runs its own `CI=true bash .ci/run` (what CI runs), one after the
other, alternating for `--rounds`; pytest writes JUnit XML, and the two are compared on
the tests both have and both passed (same file, same name), since a newer suite also
holds tests the old one did not.

    python bench/suite_time.py --base ac01b07                 # base, then HEAD
    python bench/suite_time.py --base ac01b07 --rounds 2      # base, HEAD, base, HEAD
    python bench/suite_time.py --compare old.xml new.xml      # only compare two reports

A round of both takes as long as both suites (about 25 minutes here); it touches only
this machine (the services .ci/run starts, fresh clones under a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

REPO = Path(__file__).resolve().parent.parent


def load(path: Path) -> dict[str, tuple[float, str]]:
    """Each test's id -> (seconds, outcome) from a JUnit XML report."""
    root = ET.parse(path).getroot()
    tests: dict[str, tuple[float, str]] = {}
    for case in root.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        tests[f"{case.get('classname')}::{case.get('name')}"] = (
            float(case.get("time", 0)),
            outcome,
        )
    return tests


def compare(old: dict[str, tuple[float, str]], new: dict[str, tuple[float, str]]) -> float:
    """Print the comparison; return the ratio new/old over the tests both have and both
    passed (a failure's time, often a timeout, says nothing about speed)."""
    common = sorted(
        k for k in set(old) & set(new) if old[k][1] == "passed" and new[k][1] == "passed"
    )
    t_old = sum(old[k][0] for k in common)
    t_new = sum(new[k][0] for k in common)
    for name, tests in (("base", old), ("new", new)):
        failed = [k for k, (_, o) in tests.items() if o in ("failure", "error")]
        print(
            f"  {name}: {len(tests)} tests, {sum(t for t, _ in tests.values()):.0f} s in "
            f"tests; {len(failed)} failed {failed[:3]}"
        )
    ratio = t_new / t_old if t_old else float("nan")
    print(
        f"  the {len(common)} tests both have and both passed: base {t_old:.0f} s, new {t_new:.0f} s, "
        f"ratio {ratio:.3f}"
    )
    per_file_old: dict[str, float] = defaultdict(float)
    per_file_new: dict[str, float] = defaultdict(float)
    for k in common:
        module = k.split("::")[0]
        per_file_old[module] += old[k][0]
        per_file_new[module] += new[k][0]
    moved = sorted(per_file_new, key=lambda m: per_file_new[m] - per_file_old[m])
    print("  largest changes, by module (common tests only):")
    for module in moved[:3] + moved[-5:]:
        print(f"    {module}: {per_file_old[module]:.1f} -> {per_file_new[module]:.1f} s")
    return ratio


def run_suite(rev: str, work: Path, report: Path) -> float:
    """Clone ``rev`` fresh and run its CI entry point; the wall time."""
    checkout = work / f"suite-{rev}"
    subprocess.run(["rm", "-rf", str(checkout)], check=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", rev], check=True)
    env = {
        **os.environ,
        "CI": "true",
        "PYTEST_ARGS": f"--junitxml={report} -p no:cacheprovider",
    }
    log = report.with_suffix(".log")
    start = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(
            ["bash", ".ci/run"], cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    wall = time.monotonic() - start
    print(f"  {rev}: exit {rc}, {wall:.0f} s wall (log {log})", flush=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="the older commit")
    parser.add_argument("--new", default="HEAD", help="the newer commit (default HEAD)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD_XML", "NEW_XML"))
    args = parser.parse_args()
    if args.compare:
        compare(load(args.compare[0]), load(args.compare[1]))
        return
    if not args.base:
        parser.error("--base or --compare is required")

    def resolve(rev: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", rev],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    base, new = resolve(args.base), resolve(args.new)
    print(f"machine: {h.machine()}; load average at start {os.getloadavg()[0]:.1f}")
    work = Path(tempfile.mkdtemp(prefix="iotp-suite-time-"))
    ratios = []
    for n in range(1, args.rounds + 1):
        print(f"round {n}: {base} then {new}", flush=True)
        reports = {rev: work / f"{rev}-{n}.xml" for rev in (base, new)}
        for rev, report in reports.items():
            run_suite(rev, work, report)
        ratios.append(compare(load(reports[base]), load(reports[new])))
    print(
        f"ratio over the common tests, per round: {', '.join(f'{r:.3f}' for r in ratios)}"
        f" (median {statistics.median(ratios):.3f}); target <= 1.10"
    )


if __name__ == "__main__":
    main()
