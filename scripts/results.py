#!/usr/bin/env python3
"""docs/results.md from the kept campaigns (issue 11 §5): what `scripts/baselines.sh` left in
campaigns/baselines/ (fresh weights) and campaigns/baselines-bootstrap/ (BOOTSTRAP=1), each a
section, regenerated whole by one command:

    python3 scripts/results.py [OUT_MD]      (default: docs/results.md)

It writes, from the committed files only:
  * per load, each baseline across its kept training seeds — SLO-violation %, CAF and actions an
    hour: the mean over seeds with a 95 % percentile bootstrap interval over seeds and the
    interquartile mean over every (seed, replay) run (scripts/seeds.py's estimators), and Cliff's
    δ of its runs against the tuned HPA's — beside the tuned HPA on the same evaluation seeds;
  * per training seed, the checkpoint and act rule chosen on validation seeds and its
    validation figures (chosen.txt, validation.md);
  * training curves with bands over seeds (docs/img/results-<campaign>-*.svg: the mean over
    seeds of each 8,000-decision bin, the band from the lowest to the highest seed);
  * what the campaign does not have yet (seeds not kept, protocols not run), named.
No figure is typed in: every number comes from a file under KEPT. Standard library only.
"""

import csv
import os
import random
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds import bootstrap, trim_mean  # noqa: E402

BASELINES = ["gat-ppo", "mlp-ppo", "gcn-sac", "dysat-a2c"]
SEEDS = 5
METRICS = [
    ("slo_violation_pct", "SLO-violating ticks, %", 2),
    ("caf", "CAF (CPU against the tuned HPA's)", 2),
    ("actions_per_hour", "actions an hour", 0),
]
CURVES = [
    ("charts/mean_reward", "mean reward per decision"),
    ("charts/slo_vio", "SLO-violation term of the reward"),
    ("charts/nothing_frac", "share of decisions that do nothing"),
]
BIN = 8000


def load_label(scenario):
    return "Azure trace" if scenario.startswith("trace:") else scenario


def cliffs_delta(xs, ys):
    gt = sum(1 for x in xs for y in ys if x > y)
    lt = sum(1 for x in xs for y in ys if x < y)
    return (gt - lt) / (len(xs) * len(ys))


def magnitude(d):
    a = abs(d)
    return "negligible" if a < 0.147 else "small" if a < 0.33 else "medium" if a < 0.474 else "large"


def read_runs(path, runs, where):
    """(scenario, policy, seed) -> row; a run seen twice must have the same figures."""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["scenario"], row["policy"], row["seed"])
            figures = tuple(row[m] for m, _, _ in METRICS)
            if key in runs and runs[key][1] != figures:
                sys.exit(f"{path}: {key} differs from the same run in {runs[key][0]}")
            runs.setdefault(key, (where, figures))


def svg_curve(series, title, path):
    """series: name -> list of (x, [per-seed values]); mean line and min-max band per name."""
    w, h, left, right, top, bottom = 720, 360, 70, 150, 30, 40
    xs = [x for s in series.values() for x, _ in s]
    ys = [v for s in series.values() for _, vals in s for v in vals]
    if not xs:
        return False
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y1 = y0 + 1
    sx = lambda x: left + (x - x0) / max(x1 - x0, 1) * (w - left - right)
    sy = lambda y: top + (y1 - y) / (y1 - y0) * (h - top - bottom)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="DejaVu Sans, sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
    ]
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
        x = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{sx(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x / 1000:.0f}k</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 6}" text-anchor="middle">decisions</text>')
    for i, (name, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        upper = " ".join(f"{sx(x):.1f},{sy(max(v)):.1f}" for x, v in s)
        lower = " ".join(f"{sx(x):.1f},{sy(min(v)):.1f}" for x, v in reversed(s))
        out.append(f'<polygon points="{upper} {lower}" fill="{c}" fill-opacity="0.18" stroke="none"/>')
        mean = " ".join(f"{sx(x):.1f},{sy(sum(v) / len(v)):.1f}" for x, v in s)
        out.append(f'<polyline points="{mean}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        n = max(len(v) for _, v in s)
        out.append(f'<rect x="{w - right + 10}" y="{top + 18 * i}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{w - right + 28}" y="{top + 18 * i + 10}">{name} ({n} seed{"s" if n > 1 else ""})</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def binned(train_csv, column):
    """BIN-decision bins of one training log: bin end -> mean of the column's updates."""
    acc = defaultdict(list)
    with open(train_csv, newline="") as f:
        for row in csv.DictReader(f):
            if column in row and row[column] not in ("", "nan"):
                step = int(row["global_step"])
                acc[(step + BIN - 1) // BIN * BIN].append(float(row[column]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


# (kept, title, what each training starts from, whether it starts from a clone: SAC cannot be
# cloned, so it has no place in that protocol)
PROTOCOLS = [
    ("campaigns/baselines", "From fresh weights",
     "each training from fresh weights", False),
    ("campaigns/baselines-bootstrap", "From the tuned HPA's clone (`BOOTSTRAP=1`)",
     "each training cloned from the same recording of the tuned HPA (seeds 201-206) and then fine-tuned", True),
]


def section(kept, title, how, cloned, img_dir, slug):
    """The lines of one protocol's section, its SVG curves written under img_dir."""
    runs = {}
    hpa = os.path.join(kept, "tuned-hpa", "eval-runs.csv")
    if not os.path.exists(hpa):
        if not any(os.path.isdir(os.path.join(kept, f"{b}-{s}")) for b in BASELINES for s in range(1, SEEDS + 1)):
            return None
        sys.exit(f"{hpa}: the tuned HPA's evaluation runs are missing (scripts/baselines.sh keeps them first)")
    read_runs(hpa, runs, hpa)
    seeds_of = {}
    chosen = []
    for b in BASELINES:
        seeds_of[b] = []
        for s in range(1, SEEDS + 1):
            d = os.path.join(kept, f"{b}-{s}")
            if not os.path.exists(os.path.join(d, "eval-runs.csv")):
                continue
            seeds_of[b].append(s)
            read_runs(os.path.join(d, "eval-runs.csv"), runs, d)
            words = open(os.path.join(d, "chosen.txt")).read().split()
            rule = words[2] if len(words) > 2 else "mode (validated by the mode only)"
            at = words[1].rsplit("-at", 1)[1]
            val = ""
            for line in open(os.path.join(d, "validation.md")):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if cells and cells[-1] == "✔":
                    val = f"{cells[-3]} | {cells[-2]}"
            chosen.append(f"| {b} | {s} | {at} | {rule} | {val} |")
    # scenario -> policy group -> seed -> metric -> [replays]
    data = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    scenarios = []
    for (sc, policy, _), (_, figures) in runs.items():
        if sc not in scenarios:
            scenarios.append(sc)
        m = re.fullmatch(r"(.+)-(\d+)", policy)
        group, seed = (m.group(1), int(m.group(2))) if m else (policy, 0)
        if group not in BASELINES and group != "tuned-hpa":
            continue
        for (k, _, _), v in zip(METRICS, figures):
            v = float(v)
            if v != v:
                sys.exit(f"{kept}: {policy} on {sc}: {k} is NaN")
            data[sc][group][seed][k].append(v)
    rng = random.Random(0)
    present = [b for b in BASELINES if seeds_of[b]]
    if not present:
        return None
    L = [f"## {title}", "", f"`{kept}/`: {how}.", "", "| baseline | training seeds kept |", "|---|---|"]
    for b in BASELINES:
        if cloned and b.endswith("-sac") and not seeds_of[b]:
            L.append(f"| {b} | not in this protocol (SAC has no PPO heads to clone into) |")
            continue
        L.append(f"| {b} | {', '.join(map(str, seeds_of[b])) or 'none'} of {SEEDS} |")
    L += ["", "A baseline with fewer than five seeds kept is reported on those it has; it is not a result",
          "of the protocol until all five are in.", ""]
    for k, label, digits in METRICS:
        L += [f"### {label}", "", "| load | tuned HPA | " + " | ".join(present) + " |",
              "|---|---|" + "---|" * len(present)]
        for sc in scenarios:
            ref = data[sc]["tuned-hpa"][0][k]
            cells = [f"{sum(ref) / len(ref):.{digits}f}" if ref else "–"]
            for b in present:
                per = data[sc][b]
                per_seed = [sum(v[k]) / len(v[k]) for _, v in sorted(per.items())]
                allr = [x for v in per.values() for x in v[k]]
                if not per_seed:
                    cells.append("–")
                    continue
                mean = f"{sum(per_seed) / len(per_seed):.{digits}f}"
                if len(per_seed) > 1:
                    lo, hi = bootstrap(per_seed, rng)
                    mean += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
                else:
                    mean += " (one seed: no interval)"
                cell = f"{mean}, IQM {trim_mean(allr):.{digits}f}"
                if ref and k != "caf":
                    d = cliffs_delta(allr, ref)
                    cell += f", δ {d:+.2f} {magnitude(d)}"
                cells.append(cell)
            L.append(f"| {load_label(sc)} | " + " | ".join(cells) + " |")
        L.append("")
    L += ["### Checkpoints chosen on validation", "",
          "Per training seed, the candidate (decisions) and act rule with the lowest SLO-violation % over",
          "the validation runs (ties within 0.05 points: the lower CAF), from `chosen.txt` and",
          "`validation.md` (which lists every candidate's figures under both rules).", "",
          "| baseline | training seed | decisions | act rule | validation SLO viol % | validation CAF |",
          "|---|---|---|---|---|---|"] + chosen + [""]
    L += ["### Training curves", "",
          f"Mean over the kept seeds of each {BIN:,}-decision bin of `train.csv`; the band spans the",
          "lowest to the highest seed.", ""]
    for col, label in CURVES:
        series = {}
        for b in present:
            per = [binned(os.path.join(kept, f"{b}-{s}", "train.csv"), col) for s in seeds_of[b]]
            per = [p for p in per if p]
            if not per:
                continue
            xs = sorted(set.intersection(*(set(p) for p in per)))
            series[b] = [(x, [p[x] for p in per]) for x in xs]
        name = f"results-{slug}-" + col.split("/")[-1].replace("_", "-") + ".svg"
        if svg_curve(series, label, os.path.join(img_dir, name)):
            L += [f"![{label}](img/{name})", ""]
    missing = [f"{b} seeds {', '.join(str(s) for s in range(1, SEEDS + 1) if s not in seeds_of[b])}"
               for b in BASELINES
               if len(seeds_of[b]) < SEEDS and not (cloned and b.endswith("-sac") and not seeds_of[b])]
    if missing:
        L += [f"Trainings not kept yet: {'; '.join(missing)}.", ""]
    return L


def main():
    out_md = sys.argv[1] if len(sys.argv) > 1 else "docs/results.md"
    img_dir = os.path.join(os.path.dirname(out_md) or ".", "img")
    os.makedirs(img_dir, exist_ok=True)
    L = [
        "# Results",
        "",
        "Generated by `python3 scripts/results.py` from the trainings `scripts/baselines.sh` kept",
        "(issue 11's protocol: the same reward, load and number of decisions for every baseline,",
        "checkpoint and act rule chosen on validation seeds 101–102, measured on evaluation seeds 1–5",
        "of each load, 4 h per run, in the loop that serves the policies, beside the tuned HPA on the",
        "same seeds). Do not edit by hand: rerun the command. Intervals are 95 % percentile bootstrap",
        "intervals over training seeds (10,000 resamples); IQM is the interquartile mean over every",
        "(seed, replay) run; δ is Cliff's delta of the baseline's runs against the tuned HPA's",
        "(positive: higher values).",
        "",
    ]
    absent = []
    for kept, title, how, cloned in PROTOCOLS:
        lines = section(kept, title, how, cloned, img_dir, os.path.basename(kept)) if os.path.isdir(kept) else None
        if lines:
            L += lines
        else:
            absent.append(f"* {title}: no training kept in `{kept}/` yet.")
    L += ["## Not here yet", ""] + absent
    for what, path in [
        ("The ablation (encoders under PPO, algorithms under GAT, the actor's global scalars)", "campaigns/ablations"),
        ("The HPA frontier per load with each policy's point (`graphscaler hpa-sweep`, `eval --frontier`)", "campaigns/frontier"),
    ]:
        if not os.path.isdir(path):
            L.append(f"* {what}: not run; nothing kept in `{path}/`.")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {out_md}")


if __name__ == "__main__":
    main()
