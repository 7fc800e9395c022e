#!/usr/bin/env python3
"""Checkpoint selection on validation seeds (issue 11's protocol; scripts/baselines.sh).

From a validation evaluation's runs.csv (`graphscaler eval --out DIR` on validation seeds) whose
policies are candidates named `<group>-<seed>-at<decisions>[-<act>]` (the checkpoints `graphscaler
train --keep-every` writes, each evaluated under the act rule `mode` or `sample`, `learn.act`;
no suffix: `mode`), choose per (group, training seed) the candidate and rule with the lowest mean
SLO violation % over every validation run (every load and replay); one within 0.05 percentage
points of the lowest wins on the lower mean CAF, then on fewer decisions, then `mode`. Every
candidate's figures and the choice are written to OUT_MD; the choices, one `<group>-<seed>
<group>-<seed>-at<decisions> <act>` per line, to stdout.

Usage: select.py RUNS_CSV OUT_MD
Standard library only.
"""

import csv
import re
import sys
from collections import defaultdict

TIE_PP = 0.05


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    runs_csv, out_md = sys.argv[1], sys.argv[2]
    runs = defaultdict(lambda: {"slo": [], "caf": []})
    with open(runs_csv, newline="") as f:
        for row in csv.DictReader(f):
            m = re.fullmatch(r"(.+)-(\d+)-at(\d+)(?:-(mode|sample))?", row["policy"])
            if not m:
                continue
            slo, caf = float(row["slo_violation_pct"]), float(row["caf"])
            if slo != slo or caf != caf:
                sys.exit(f"{runs_csv}: {row['policy']} on {row['scenario']}: a NaN figure")
            key = (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4) or "mode")
            runs[key]["slo"].append(slo)
            runs[key]["caf"].append(caf)
    if not runs:
        sys.exit(f"{runs_csv}: no candidate named <group>-<seed>-at<decisions>[-mode|-sample]")
    mean = lambda xs: sum(xs) / len(xs)
    by_seed = defaultdict(list)
    for (group, seed, at, act), r in runs.items():
        by_seed[(group, seed)].append((mean(r["slo"]), mean(r["caf"]), at, act, len(r["slo"])))
    lines = [
        "| group | training seed | candidate (decisions) | act | validation runs | SLO viol % | CAF | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    chosen = []
    for (group, seed), cands in sorted(by_seed.items()):
        best = min(c[0] for c in cands)
        # Ties: the lower CAF, fewer decisions, then the mode (`mode` < `sample`).
        pick = min((c for c in cands if c[0] <= best + TIE_PP), key=lambda c: (c[1], c[2], c[3]))
        chosen.append(f"{group}-{seed} {group}-{seed}-at{pick[2]} {pick[3]}")
        for slo, caf, at, act, n in sorted(cands, key=lambda c: (c[2], c[3])):
            mark = "✔" if (at, act) == (pick[2], pick[3]) else ""
            lines.append(f"| {group} | {seed} | {at} | {act} | {n} | {slo:.2f} | {caf:.2f} | {mark} |")
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(chosen))


if __name__ == "__main__":
    main()
