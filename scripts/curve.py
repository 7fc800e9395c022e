#!/usr/bin/env python3
"""A training curve's figures over a stretch of decisions: for each column of a training log
(`graphscaler train`'s NAME.csv, plain or gzipped), its mean, minimum and maximum over the
updates whose global_step lies in [FROM, TO].

Usage: curve.py TRAIN_CSV FROM TO COLUMN...
  e.g. curve.py campaigns/baselines/gcn-sac-1/train.csv 4000 130000 losses/entropy charts/nothing_frac
Standard library only.
"""

import csv
import gzip
import sys


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    path, lo, hi, columns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = [r for r in csv.DictReader(f) if lo <= int(r["global_step"]) <= hi]
    if not rows:
        sys.exit(f"{path}: no update with global_step in [{lo}, {hi}]")
    print(f"{len(rows)} updates, global_step {lo}-{hi}")
    for c in columns:
        if c not in rows[0]:
            sys.exit(f"{path}: no column `{c}`")
        xs = [float(r[c]) for r in rows]
        print(f"{c}: mean {sum(xs) / len(xs):.4g}, min {min(xs):.4g}, max {max(xs):.4g}")


if __name__ == "__main__":
    main()
