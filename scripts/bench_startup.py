#!/usr/bin/env python3
"""What loading libtorch costs a command that runs no model.

Times `graphscaler` (built without libtorch) against `graphscaler-learn` (the same command line,
linked with libtorch) on the same commands, 7 runs each, interleaved, and prints the medians and
their ratio. Build first: `cargo build --release --locked --bins`.

    python3 scripts/bench_startup.py [BIN_DIR]    # default: target/release
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT / "target/release"
ROUNDS = 7


def wall(binary, args):
    t0 = time.perf_counter()
    done = subprocess.run([str(BIN / binary), *args], cwd=ROOT, capture_output=True)
    t = time.perf_counter() - t0
    return t, done.returncode


def main():
    out = tempfile.mkdtemp(prefix="gs-startup-")
    commands = [
        ("config (a configuration printed)", ["config"]),
        ("a configuration error", ["--config", "/nonexistent.toml", "config"]),
        (
            "twin run --policy hpa --duration 4h --no-plots",
            ["twin", "run", "--policy", "hpa", "--duration", "4h", "--no-plots", "--out", out],
        ),
    ]
    print(f"{'command':<50} {'graphscaler':>12} {'graphscaler-learn':>18} {'ratio':>7}")
    for name, args in commands:
        times = {"graphscaler": [], "graphscaler-learn": []}
        codes = set()
        for _ in range(ROUNDS):
            for b in times:
                t, rc = wall(b, args)
                times[b].append(t)
                codes.add(rc)
        light = statistics.median(times["graphscaler"])
        heavy = statistics.median(times["graphscaler-learn"])
        print(f"{name:<50} {light:>10.3f} s {heavy:>16.3f} s {heavy / light:>6.1f}x  (exit codes {sorted(codes)})")


if __name__ == "__main__":
    main()
