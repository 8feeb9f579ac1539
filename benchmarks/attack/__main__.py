"""Run every attack area and report: ``python -m benchmarks.attack [--only AREA ...] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

AREAS = ("osc", "bridge", "snc", "offline", "web")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=AREAS, help="run only these areas")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for CI)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = []
    failed = 0
    for area in args.only or AREAS:
        module = importlib.import_module(f"benchmarks.attack.{area}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"sb-attack-{area}-") as scratch:
            result = module.run(Path(scratch), quick=args.quick)
        seconds = time.monotonic() - started
        failed += len(result.findings)
        print(f"{area:8s} {result.probes:5d} probes  {len(result.findings):3d} findings  {seconds:6.1f} s")
        for finding in result.findings:
            print(f"    {finding.kind:12s} {finding.probe}: {finding.detail}")
        report.append({"area": area, "probes": result.probes, "seconds": round(seconds, 1),
                       "findings": [vars(f) for f in result.findings]})
    total = sum(r["probes"] for r in report)
    print(f"total    {total:5d} probes  {failed:3d} findings")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
