"""Run every benchmark in its smoke mode (smallest configuration, one repeat): `python -m bench --smoke`.

The numbers a smoke run prints are not measurements worth quoting; the run proves each benchmark
still works against the current code, so the README's `python -m bench.*` commands do not rot.
Each benchmark builds and removes its own lab, one after the other (root).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = ("bootstrap", "deploy", "verify", "rollout", "images", "recover", "daily", "maintain")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", required=True, help="the only mode: smallest runs")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of: {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} (there are: {', '.join(BENCHMARKS)})")
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"==> python -m bench.{name} --smoke", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke"]).returncode
        print(f"    bench.{name}: exit {rc} in {time.monotonic() - t0:.0f}s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks failed in smoke mode: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
