#!/usr/bin/env bash
# The bootstrap from recorded snapshots (docs/learning.md#bootstrap), end to end in the served
# loop: the tuned HPA recorded by `graphscaler twin record` on the four shapes, the burst
# generator and the shipped Azure trace (4 hours each, seeds 101-106); for each training seed
# 1-$SEEDS (default 5), GAT-PPO cloned from that store by `graphscaler train --from --steps 0`
# (clone-S) and, from the same clone, fine-tuned for $STEPS decisions (default 30000) on the load
# the store recorded (tuned-S); then every clone and fine-tuned policy, the tuned HPA, `static`
# and the shipped GAT-PPO (the hand curriculum's) evaluated on evaluation seeds 1-5 that no
# recording or training used; then the figures across training seeds (scripts/seeds.py: mean,
# 95% bootstrap CI over seeds, IQM, median seed). No checkpoint is chosen: every seed's final
# one is reported. Writes results/bootstrap/ (the store, the checkpoints with their logs, the
# evaluation, summary.md). Rerun after an interruption, it keeps the store and the checkpoints
# already written and resumes a stopped fine-tuning (`--resume`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
out=results/bootstrap
steps=${STEPS:-30000}
seeds=${SEEDS:-5}
trace="trace:data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv"
if [ ! -d "$out/store" ]; then
    rm -rf "$out/store.partial"
    seed=101
    for sc in off-peak peak rush fluctuating burst "$trace"; do
        "$gs" twin record --policy tuned-hpa --scenario "$sc" --duration 4h --seed "$seed" \
            --out "$out/store.partial"
        seed=$((seed + 1))
    done
    mv "$out/store.partial" "$out/store"
fi
policies=tuned-hpa,static,gat-ppo
for s in $(seq 1 "$seeds"); do
    [ -f "$out/clone-$s.json" ] ||
        "$gs" train --encoder gat --algo ppo --from "$out/store" --steps 0 --seed "$s" --out "$out/clone-$s"
    train_resumable "$out/tuned-$s" --encoder gat --algo ppo --from "$out/store" --steps "$steps" \
        --seed "$s"
    policies="$policies,clone-$s=$out/clone-$s,tuned-$s=$out/tuned-$s"
done
"$gs" eval --policies "$policies" --scenarios "off-peak,peak,rush,fluctuating,burst,$trace" \
    --replays 5 --duration 4h --resume --out "$out/eval"
python3 scripts/seeds.py "$out/eval/runs.csv" "$out/summary.md" slo_violation_pct caf requests_over_slo_pct
