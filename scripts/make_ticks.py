#!/usr/bin/env python3
"""Writes tick files for backtest benchmarks.

usage: make_ticks.py N OUT.csv              the reference file (docs/performance.md, "Backtest")
       make_ticks.py --walk N OUT.csv       the older three-instrument walk

The reference file: header `instrument_token,timestamp,last_price`; instruments 738561 and
2953217 take turns row by row, 250 ms of event time apart from 2026-01-05T03:50:00Z; each
price is an independent random walk in whole paise (from 2500.00 and 3800.00), moving by
a uniform whole number of paise in [-5, 5] per row of its instrument (Python's
random.Random(42), one randint per row), never below 1.00. The same N gives the same bytes
everywhere: scripts/bench.sh checks the sha256 of the 1M file.

The older walk: a seeded random walk (seed 1, sigma 0.1 % per tick) on the embedded
default's three instruments, one tick per instrument every 200 ms of event time from
2024-01-15 09:15 IST.
"""
import random
import sys
from datetime import datetime, timedelta, timezone


def reference(n, out):
    rng = random.Random(42)
    tokens = (738561, 2953217)
    paise = [250000, 380000]
    epoch = datetime(2026, 1, 5, 3, 50, tzinfo=timezone.utc)
    start_ms = int(epoch.timestamp()) * 1000
    with open(out, "w", newline="") as f:
        f.write("instrument_token,timestamp,last_price\n")
        rows = []
        for i in range(n):
            k = i & 1
            paise[k] = max(100, paise[k] + rng.randint(-5, 5))
            ms = start_ms + 250 * i
            when = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
            rows.append("%d,%s.%03dZ,%d.%02d\n" % (
                tokens[k], when.strftime("%Y-%m-%dT%H:%M:%S"), ms % 1000,
                paise[k] // 100, paise[k] % 100))
            if len(rows) == 65536:
                f.write("".join(rows))
                rows.clear()
        f.write("".join(rows))


def walk(n, out):
    rng = random.Random(1)
    prices = {738561: 2450.0, 408065: 1500.0, 2953217: 3400.0}
    start = datetime(2024, 1, 15, 3, 45, tzinfo=timezone.utc)
    with open(out, "w") as f:
        f.write("instrument_token,timestamp,last_price\n")
        i = 0
        step = 0
        while i < n:
            ts = (start + timedelta(milliseconds=200 * step)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for token in prices:
                if i == n:
                    break
                prices[token] = max(1.0, prices[token] * (1 + rng.gauss(0, 0.001)))
                f.write(f"{token},{ts},{prices[token]:.2f}\n")
                i += 1
            step += 1


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--walk":
        walk(int(args[1]), args[2])
    else:
        reference(int(args[0]), args[1])
