#!/usr/bin/env bash
# The evidence behind the default snapshot window (`pipeline.window_s`, docs/pipeline.md#window):
# decision quality and the pipeline's cost at 15 s and at 30 s windows, in the served loop.
#
# For each window it runs `graphscaler eval` (every policy through the served loop: the graph
# job's snapshots, the guardrails) for the tuned HPA and the shipped GAT-PPO on the four shapes,
# 5 replays of 4 hours, and `graphscaler run` (the stages on the in-process bus) once on Rush,
# whose wall time and counts are the pipeline's cost. Prints one table per window and writes the
# eval outputs to results/window-<s>/. Extra arguments go to both evals.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
for w in 15 30; do
    echo "== pipeline.window_s = $w"
    GRAPHSCALER_PIPELINE__WINDOW_S=$w "$gs" eval --policies tuned-hpa,gat-ppo --scenarios all \
        --replays 5 --duration 4h --no-plots --out "results/window-$w" "$@"
    GRAPHSCALER_PIPELINE__WINDOW_S=$w "$gs" run --scenario rush --duration 4h --seed 1 \
        --policy tuned-hpa
    python3 - "results/window-$w/runs.csv" <<'EOF'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
by = collections.defaultdict(list)
for r in rows:
    by[(r["scenario"], r["policy"])].append(r)
print(f"{'scenario':<12} {'policy':<10} {'SLO viol %':>10} {'core-s (mean)':>14} {'actions/h':>10}")
for (s, p), rs in by.items():
    m = lambda k: sum(float(r[k]) for r in rs) / len(rs)
    print(f"{s:<12} {p:<10} {m('slo_violation_pct'):>10.3f} {m('cpu_core_seconds'):>14.0f} {m('actions_per_hour'):>10.1f}")
EOF
done
