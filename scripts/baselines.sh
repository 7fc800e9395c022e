#!/usr/bin/env bash
# The design's four baselines on equal terms (issue 11 §4; docs/learning.md#baselines-on-equal-terms):
#
#   * the same reward (the defaults), the same load (`bursty-mix`: the four shapes, the burst
#     generator and the shipped Azure trace), the same start (fresh weights), the same number of
#     decisions ($STEPS, default 200000) and the same loop (the twin through the graph job and the
#     guardrails), for training seeds 1-$SEEDS (default 5);
#   * $KEEP candidates per training (`--keep-every STEPS/KEEP`, default 3) and the final model;
#     per training seed the candidate with the lowest SLO-violation % on validation seeds
#     101-102 of the six loads (4 h each), ties within 0.05 points going to the lower CAF
#     (scripts/select.py; the table of every candidate is validation.md);
#   * the chosen checkpoints, with the tuned HPA, evaluated on evaluation seeds 1-5 that neither
#     training nor validation used, 4 h per replay, and reported across training seeds
#     (scripts/seeds.py: mean, 95% bootstrap CI over seeds, IQM, median seed): summary.md.
#
# BASELINES (default "gat-ppo mlp-ppo gcn-sac dysat-a2c") names <encoder>-<algo> pairs, so the
# same protocol runs the ablations (e.g. BASELINES="tgat-ppo gcn-ppo dysat-ppo gat-a2c gat-sac").
# JOBS (default 1) trainings run at a time, each on one libtorch thread; DURATION (default 4h)
# is each evaluation run's length (shorter only to try the script out). Writes
# results/baselines/ (OUT overrides). Rerun after an interruption, it keeps what is done,
# resumes a stopped training (`--resume`; SAC's with its replay buffer) and a stopped validation or evaluation (`eval --resume`: the runs already in its
# journal are not run again).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
export out=${OUT:-results/baselines}
export steps=${STEPS:-200000}
seeds=${SEEDS:-5}
keep=${KEEP:-3}
export every=$(((steps + keep - 1) / keep))
baselines=${BASELINES:-gat-ppo mlp-ppo gcn-sac dysat-a2c}
trace="trace:data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv"
loads="off-peak,peak,rush,fluctuating,burst,$trace"
mkdir -p "$out"

train_one() {
    local name=$1 seed=$2
    local enc=${name%-*} algo=${name##*-}
    local dst="$out/$name-$seed"
    [ -f "$dst.json" ] && return 0
    local args=(--encoder "$enc" --algo "$algo" --scenario bursty-mix --steps "$steps" --seed "$seed"
        --keep-every "$every")
    train_resumable "$dst" "${args[@]}" >>"$dst.log" 2>&1 ||
        { echo "training $name-$seed failed or stopped at the time limit: see $dst.log" >&2; return 1; }
}
export -f train_one

for b in $baselines; do
    for s in $(seq 1 "$seeds"); do echo "$b $s"; done
done | xargs -P "${JOBS:-1}" -n 2 bash -c 'train_one "$0" "$1"'

# Validation: every candidate and every final model, named <baseline>-<seed>-at<decisions>.
candidates=""
for b in $baselines; do
    for s in $(seq 1 "$seeds"); do
        final=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["training"]["steps"])' "$out/$b-$s.json")
        candidates="$candidates,$b-$s-at$final=$out/$b-$s"
        for c in "$out/$b-$s"-at*.json; do
            [ -e "$c" ] || continue
            at=${c##*-at}
            at=${at%.json}
            [ "$at" = "$final" ] || candidates="$candidates,$b-$s-at$at=${c%.json}"
        done
    done
done
if [ ! -f "$out/validation/runs.csv" ]; then
    "$gs" eval --policies "${candidates#,}" --scenarios "$loads" --seed 101 --replays 2 \
        --duration "${DURATION:-4h}" --resume --out "$out/validation.partial"
    rm -rf "$out/validation"
    mv "$out/validation.partial" "$out/validation"
fi
chosen=$(python3 scripts/select.py "$out/validation/runs.csv" "$out/validation.md")
echo "$chosen" >"$out/chosen.txt"

# Evaluation of the chosen checkpoints on seeds 1-5, across training seeds.
policies=tuned-hpa
while read -r name candidate; do
    at=${candidate##*-at}
    path="$out/$candidate"
    [ -f "$path.json" ] || path="$out/$name"
    [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["training"]["steps"])' "$path.json")" = "$at" ] ||
        { echo "$candidate: no checkpoint at $at decisions" >&2; exit 1; }
    policies="$policies,$name=$path"
done <"$out/chosen.txt"
if [ ! -f "$out/eval/runs.csv" ]; then
    "$gs" eval --policies "$policies" --scenarios "$loads" --replays 5 --duration "${DURATION:-4h}" \
        --resume --out "$out/eval.partial"
    rm -rf "$out/eval"
    mv "$out/eval.partial" "$out/eval"
fi
python3 scripts/seeds.py "$out/eval/runs.csv" "$out/summary.md" slo_violation_pct caf requests_over_slo_pct
