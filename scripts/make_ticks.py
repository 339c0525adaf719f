#!/usr/bin/env python3
"""Writes a tick file for backtest benchmarks: a seeded random walk (seed 1, sigma 0.1 % per
tick) on the embedded default's three instruments, one tick per instrument every 200 ms of
event time from 2024-01-15 09:15 IST.

usage: make_ticks.py N OUT.csv
"""
import random
import sys
from datetime import datetime, timedelta, timezone

n, out = int(sys.argv[1]), sys.argv[2]
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
