#!/usr/bin/env bash
# The ablation of the actor's global scalars (seed §3.1; docs/learning.md#the-hybrid-action): the
# recipe of scripts/bootstrap.sh — GAT-PPO cloned from the tuned HPA's recordings, then fine-tuned
# for $STEPS decisions (default 30000) on the recorded load — with an actor that reads the graph
# alone (`--no-actor-global`, nog-S), for training seeds 1-$SEEDS (default 5), evaluated beside
# bootstrap.sh's tuned-S (whose actor reads the scalars) on evaluation seeds 1-5 of the same six
# loads; then both across training seeds (scripts/seeds.py). Needs bootstrap.sh's results (it
# runs it first when they are missing). Writes results/ablation-global/ (checkpoints, the
# evaluation, summary.md). Rerun after an interruption, it keeps what is done.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
seeds=${SEEDS:-5}
[ -f "results/bootstrap/tuned-$seeds.json" ] || ./scripts/bootstrap.sh
store=results/bootstrap/store
out=results/ablation-global
steps=${STEPS:-30000}
trace="trace:data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv"
mkdir -p "$out"
policies=tuned-hpa
for s in $(seq 1 "$seeds"); do
    train_resumable "$out/nog-$s" --encoder gat --algo ppo --no-actor-global --from "$store" \
        --steps "$steps" --seed "$s"
    policies="$policies,global-$s=results/bootstrap/tuned-$s,nog-$s=$out/nog-$s"
done
"$gs" eval --policies "$policies" --scenarios "off-peak,peak,rush,fluctuating,burst,$trace" \
    --replays 5 --duration 4h --resume --out "$out/eval"
python3 scripts/seeds.py "$out/eval/runs.csv" "$out/summary.md" slo_violation_pct caf requests_over_slo_pct
