#!/usr/bin/env python3
"""Learned results across training seeds, as Agarwal et al. ("Deep RL at the edge of the
statistical precipice", 2021) ask: from an evaluation's runs.csv (`graphscaler eval --out DIR`),
policies named `<group>-<seed>` (e.g. tuned-1 ... tuned-5) are pooled into their group.

For each scenario, group and metric:
  * per training seed, the mean over its evaluation replays;
  * the mean over seeds, with a 95 % percentile bootstrap interval over seeds (10,000 resamples
    with replacement, fixed generator);
  * the interquartile mean over every (seed, replay) run (the middle 50 %, as rliable's
    scipy.stats.trim_mean(x, 0.25));
  * the median seed's figure.
A policy that is not a group (the HPA, static) has no training seeds: its interval is over its
replays, and its "median seed" is its mean. A run (scenario, policy, seed) that appears more than
once — the tuned HPA is in every evaluation, as the CAF reference — counts once.

Usage: seeds.py RUNS_CSV OUT_MD [METRIC ...]   (default metrics: slo_violation_pct caf)
Standard library only.
"""

import csv
import random
import re
import sys
from collections import defaultdict


def trim_mean(xs, cut=0.25):
    xs = sorted(xs)
    k = int(len(xs) * cut)
    mid = xs[k : len(xs) - k] or xs
    return sum(mid) / len(mid)


def bootstrap(units, rng, n=10_000):
    if len(units) < 2:
        return (units[0], units[0])
    means = sorted(sum(rng.choice(units) for _ in units) / len(units) for _ in range(n))
    return (means[int(0.025 * n)], means[int(0.975 * n) - 1])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs_csv, out_md = sys.argv[1], sys.argv[2]
    metrics = sys.argv[3:] or ["slo_violation_pct", "caf"]
    # (scenario, group) -> seed -> metric -> [per replay]
    data = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    order = []
    scenarios = []
    seen = {}
    with open(runs_csv, newline="") as f:
        for row in csv.DictReader(f):
            # The same run pooled twice (the tuned HPA is in every evaluation as the CAF
            # reference) counts once; two different rows for one run are an error.
            run = (row["scenario"], row["policy"], row.get("seed", row.get("replay")))
            figures = tuple(row[k] for k in metrics)
            if run in seen:
                if seen[run] != figures:
                    sys.exit(f"{runs_csv}: {run} appears twice with different figures")
                continue
            seen[run] = figures
            m = re.fullmatch(r"(.+)-(\d+)", row["policy"])
            group, seed = (m.group(1), int(m.group(2))) if m else (row["policy"], None)
            if row["scenario"] not in scenarios:
                scenarios.append(row["scenario"])
            if (row["scenario"], group) not in data:
                order.append((row["scenario"], group))
            for k in metrics:
                v = float(row[k])
                if v != v:
                    sys.exit(f"{runs_csv}: {row['policy']} on {row['scenario']}: {k} is NaN")
                data[(row["scenario"], group)][seed][k].append(v)
    rng = random.Random(0)
    lines = []
    scenario = None
    # One table per scenario, in the order scenarios first appear.
    order.sort(key=lambda k: scenarios.index(k[0]))
    for key in order:
        sc, group = key
        if sc != scenario:
            scenario = sc
            lines += [
                "",
                f"**{sc}**",
                "",
                "| policy | training seeds | "
                + " | ".join(
                    f"{k}: mean [95% CI] | {k}: IQM | {k}: median seed" for k in metrics
                )
                + " |",
                "|---|---|" + "---|---|---|" * len(metrics),
            ]
        seeds = data[key]
        cells = []
        for k in metrics:
            if None in seeds:  # not a group: the replays are the units
                units = seeds[None][k]
                per_seed = [sum(units) / len(units)]
            else:
                per_seed = [sum(v[k]) / len(v[k]) for _, v in sorted(seeds.items())]
                units = per_seed
            runs = [x for v in seeds.values() for x in v[k]]
            lo, hi = bootstrap(units, rng)
            mean = sum(per_seed) / len(per_seed) if None not in seeds else per_seed[0]
            med = sorted(per_seed)[len(per_seed) // 2]
            cells.append(f"{mean:.2f} [{lo:.2f}, {hi:.2f}] | {trim_mean(runs):.2f} | {med:.2f}")
        n = "—" if None in seeds else str(len(seeds))
        lines.append(f"| {group} | {n} | " + " | ".join(cells) + " |")
    text = "\n".join(lines).lstrip("\n") + "\n"
    with open(out_md, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
