"""How the client's rate comes back after 429s (issue: 429 recovery).

Run by hand:  .venv/bin/python benchmarks/bench_429.py [--rate 20]

Two figures, each against what the server allowed in the same run:
* a 20 s storm of 429s, then none: seconds until the client sends at >= 90 % of its
  configured rate again (goal: < 5 s);
* a steady 30 % of random 429s for 60 s: requests the server admitted per second,
  as a share of what it would admit at the configured rate (goal: >= 50 %).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.load_429 import drive, recovery_seconds


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--storm", type=float, default=20.0)
    parser.add_argument("--noisy", type=float, default=60.0)
    args = parser.parse_args()
    rate = args.rate
    start, end = 5.0, 5.0 + args.storm
    stormy = await drive(rate=rate, seconds=end + 15.0, storm=(start, end))
    before = stormy.rate(1.0, start)
    back = recovery_seconds(stormy, end, target=0.9 * rate)
    print(f"storm: {before:.1f} req/s before (configured {rate:g}); {args.storm:g} s of 429s")
    print(f"storm: back to >= 90% of the configured rate {back:.2f} s after it ended (goal < 5 s)")
    for lo in (0, 2, 5, 10):
        print(f"  {lo:>2}-{lo + 1:<2} s after: {stormy.rate(end + lo, end + lo + 1):.1f} req/s")
    noisy = await drive(rate=rate, seconds=args.noisy, share=0.3)
    sent = noisy.rate(5.0, args.noisy)
    admitted = noisy.rate(5.0, args.noisy, admitted_only=True)
    ideal = 0.7 * rate
    print(
        f"30% random 429s: sent {sent:.1f} req/s, admitted {admitted:.1f} req/s = "
        f"{admitted / ideal:.2f}x what the server admits at the configured rate "
        f"({ideal:.1f}/s; goal >= 0.5x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
