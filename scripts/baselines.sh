#!/usr/bin/env bash
# The design's four baselines on equal terms (issue 11 §4; docs/learning.md#baselines-on-equal-terms):
#
#   * the same reward (the defaults), the same load (`bursty-mix`: the four shapes, the burst
#     generator and the shipped Azure trace), the same start (fresh weights), the same number of
#     decisions ($STEPS, default 200000) and the same loop (the twin through the graph job and the
#     guardrails), for training seeds 1-$SEEDS (default 5);
#   * $KEEP candidates per training (`--keep-every STEPS/KEEP`, default 3) and the final model,
#     each validated by its mode and by drawing from it (`learn.act`: a broad policy's mode can
#     be degenerate, docs/learning.md#how-a-policy-acts); per training seed the candidate and
#     rule with the lowest SLO-violation % on validation seeds 101-102 of the six loads (4 h
#     each), ties within 0.05 points going to the lower CAF (scripts/select.py, which writes
#     every candidate's figures); the rule is written into the kept manifest (`act`);
#   * the chosen checkpoint evaluated, by its rule, on evaluation seeds 1-5 that neither training nor
#     validation used, 4 h per replay, beside the tuned HPA on the same seeds, and reported across
#     training seeds (scripts/seeds.py: mean, 95% bootstrap CI over seeds, IQM, median seed).
#
# Each training is finished on its own — trained, its candidates validated, the chosen one
# evaluated — and what it leaves is kept in $KEPT/<baseline>-<seed>/ (default
# campaigns/baselines/, committed): the chosen checkpoint (model.safetensors, model.json), the
# training curve (train.csv), every candidate's validation figures (validation.md,
# validation-runs.csv), the choice (chosen.txt) and the evaluation runs (eval-runs.csv). A
# training whose directory is there is not run again, so a campaign that spans sessions and
# machines loses at most the trainings under way; one kept when candidates were validated by
# their mode only (chosen.txt without a rule) is validated and evaluated again where its
# candidates are in $OUT. The bulky rest (candidates, resume states, logs, journals) goes to $OUT
# (default results/baselines/, not committed). When every training is kept, the runs are pooled
# into $KEPT/runs.csv, $KEPT/validation.md and $KEPT/summary.md.
#
# BOOTSTRAP=1 starts every training from the same bootstrap instead of fresh weights (issue 11
# §3-4): the tuned HPA recorded once by `graphscaler twin record` on the six loads (4 h each,
# seeds 201-206, none of the validation or evaluation seeds) into $OUT/store, then each training
# `--from` it (behaviour cloning and the critic fitted on the recorded rewards, then $STEPS
# decisions of fine-tuning on bursty-mix). Cloning needs the PPO heads: a SAC baseline is
# refused in this mode (docs/learning.md#baselines-on-equal-terms). Use another KEPT
# (e.g. campaigns/baselines-bootstrap) so the two protocols' trainings are not mixed.
#
# BASELINES (default "gat-ppo mlp-ppo gcn-sac dysat-a2c") names <encoder>-<algo> pairs, so the
# same protocol runs the ablations (e.g. BASELINES="tgat-ppo gcn-ppo dysat-ppo gat-a2c gat-sac"
# KEPT=campaigns/ablations). JOBS (default 1) trainings run at a time, each on one libtorch
# thread and one evaluation thread; DURATION (default 4h) is each evaluation run's length
# (shorter only to try the script out). Rerun after an interruption: it keeps what is done,
# resumes a stopped training (`--resume`; SAC's with its replay buffer) and a stopped validation
# or evaluation (`eval --resume`: the runs already in its journal are not run again).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
export out=${OUT:-results/baselines}
export kept=${KEPT:-campaigns/baselines}
export steps=${STEPS:-200000}
seeds=${SEEDS:-5}
keep=${KEEP:-3}
export every=$(((steps + keep - 1) / keep))
export duration=${DURATION:-4h}
baselines=${BASELINES:-gat-ppo mlp-ppo gcn-sac dysat-a2c}
trace="trace:data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv"
export loads="off-peak,peak,rush,fluctuating,burst,$trace"
mkdir -p "$out/validation" "$out/eval" "$kept"
export bootstrap=${BOOTSTRAP:-}
if [ -n "$bootstrap" ]; then
    for b in $baselines; do
        [ "${b##*-}" != sac ] || { echo "BOOTSTRAP=1: $b cannot be cloned (SAC has no PPO heads); leave it out of BASELINES" >&2; exit 1; }
    done
    if [ ! -d "$out/store" ]; then
        rm -rf "$out/store.partial"
        seed=201
        for sc in off-peak peak rush fluctuating burst "$trace"; do
            "$gs" twin record --policy tuned-hpa --scenario "$sc" --duration 4h --seed "$seed" \
                --out "$out/store.partial" >>"$out/store.log" 2>&1
            seed=$((seed + 1))
        done
        mv "$out/store.partial" "$out/store"
    fi
fi

# Trains <baseline> <seed>, validates its candidates under both act rules, evaluates the chosen
# checkpoint by its chosen rule, and keeps it.
finish_one() {
    local name=$1 seed=$2
    local run="$name-$seed"
    local dst="$out/$run" dir="$kept/$run"
    if [ -d "$dir" ]; then
        # Kept with its act rule (chosen.txt: run, candidate, rule): done.
        [ "$(wc -w <"$dir/chosen.txt")" -lt 3 ] || return 0
        # Kept when candidates were validated by their mode only: chosen again where its
        # training's candidates are (the training is not run again).
        [ -f "$dst.json" ] ||
            { echo "$run: kept by the mode only, and its candidates are not in $out: left as kept" >&2; return 0; }
        rm -rf "$out/eval/$run" "$out/eval/$run.partial"
    fi
    local enc=${name%-*} algo=${name##*-}
    local args=(--encoder "$enc" --algo "$algo" --scenario bursty-mix --steps "$steps" --seed "$seed"
        --keep-every "$every")
    [ -z "$bootstrap" ] || args+=(--from "$out/store")
    train_resumable "$dst" "${args[@]}" >>"$dst.log" 2>&1 ||
        { echo "training $run failed or stopped at the time limit: see $dst.log" >&2; return 1; }
    # Validation: every candidate and the final model, named <baseline>-<seed>-at<decisions>-<rule>.
    validate_both_rules "$out/validation/$run" "$(candidates_of "$dst" "$run")" --scenarios "$loads" \
        --seed 101 --replays 2 --duration "$duration" >>"$dst.log" 2>&1 ||
        { echo "validation of $run failed: see $dst.log" >&2; return 1; }
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    keep_chosen "$out/validation/$run.csv" "$dir.partial" "$out" "$dst"
    cp "$dst.csv" "$dir.partial/train.csv"
    cp "$out/validation/$run.csv" "$dir.partial/validation-runs.csv"
    # Evaluation of the chosen checkpoint on seeds 1-5, acting by the rule in its manifest.
    GRAPHSCALER_LEARN__ACT=checkpoint eval_into "$out/eval/$run" --policies "$run=$dir.partial/model" \
        --scenarios "$loads" --replays 5 --duration "$duration" >>"$dst.log" 2>&1 ||
        { echo "evaluation of $run failed: see $dst.log" >&2; return 1; }
    cp "$out/eval/$run/runs.csv" "$dir.partial/eval-runs.csv"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    echo "kept $run ($(cat "$dir/chosen.txt"))" >&2
}
export -f finish_one

# The tuned HPA on the same evaluation seeds, then every training, $JOBS at a time.
tuned_hpa() {
    [ -d "$kept/tuned-hpa" ] && return 0
    eval_into "$out/eval/tuned-hpa" --policies tuned-hpa --scenarios "$loads" --replays 5 \
        --duration "$duration" >>"$out/tuned-hpa.log" 2>&1 || { echo "evaluation of tuned-hpa failed: see $out/tuned-hpa.log" >&2; return 1; }
    mkdir -p "$kept/tuned-hpa.partial"
    cp "$out/eval/tuned-hpa/runs.csv" "$kept/tuned-hpa.partial/eval-runs.csv"
    mv "$kept/tuned-hpa.partial" "$kept/tuned-hpa"
}
export -f tuned_hpa
{
    echo "tuned-hpa 0"
    for b in $baselines; do
        for s in $(seq 1 "$seeds"); do echo "$b $s"; done
    done
} | xargs -P "${JOBS:-1}" -n 2 bash -c 'set -euo pipefail; if [ "$0" = tuned-hpa ]; then tuned_hpa; else finish_one "$0" "$1"; fi'

# Every training kept: the pooled runs, every candidate's validation figures, the summary.
runs=("$kept/tuned-hpa/eval-runs.csv")
vals=()
for b in $baselines; do
    for s in $(seq 1 "$seeds"); do
        runs+=("$kept/$b-$s/eval-runs.csv")
        vals+=("$kept/$b-$s/validation-runs.csv")
    done
done
pool "$kept/runs.csv" "${runs[@]}"
pool "$out/validation-runs.csv" "${vals[@]}"
python3 scripts/select.py "$out/validation-runs.csv" "$kept/validation.md" >/dev/null
python3 scripts/seeds.py "$kept/runs.csv" "$kept/summary.md" slo_violation_pct caf requests_over_slo_pct
