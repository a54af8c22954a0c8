"""Every benchmark, one after the other, each printing its table (what `make bench` runs).

    .venv/bin/python bench/run.py [--duration 6] [--rounds 1] [--runs 20] [--soak]

The soak (bench/soak.py, ten minutes) runs only with --soak.

Exit code: 0 when every benchmark ran, else the highest code any of them returned (1: the soak
failed its verdict or a benchmark could not run; 2: a tool such as wrk is missing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import coldstart
import eventing
import gateway
import soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", default="6", help="seconds per wrk run (gateway, eventing) [6]"
    )
    parser.add_argument("--rounds", default="1", help="wrk rounds, medians (gateway) [1]")
    parser.add_argument("--runs", default="20", help="cold starts measured (coldstart) [20]")
    parser.add_argument("--soak", action="store_true", help="then the 10-minute soak too")
    args = parser.parse_args(argv)
    codes = [gateway.main(["--duration", args.duration, "--rounds", args.rounds])]
    print()
    codes.append(coldstart.main(["--runs", args.runs]))
    print()
    codes.append(eventing.main(["--duration", args.duration]))
    if args.soak:
        print()
        codes.append(soak.main([]))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
