#!/usr/bin/env bash
# The PPO training curriculum behind the shipped checkpoints/gat-ppo and checkpoints/mlp-ppo
# (docs/learning.md#results): four stages, each starting from the one before (`--init`), on one
# libtorch thread (deterministic: the same commands give the same weights).
#
#   1. 300,000 decisions, the graded SLO term (slo_step 0), 3 decisions per tick;
#   2. 200,000 more with the indicator SLO term (slo_step 1, the default);
#   3. 200,000 more with w_slo 10;
#   4. 200,000 more with w_slo 10 and up to 11 decisions per tick (every service of Online
#      Boutique can change in one tick).
#
# Usage: scripts/curriculum.sh ENCODER [FIRST_STAGE]   (ENCODER: gat, gcn, dysat or mlp)
# Stages go to checkpoints/stages/<encoder>-ppo-<n>, the last one to checkpoints/<encoder>-ppo.
# About 45 minutes for GAT, 35 for MLP, on one core.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ensure_torch
cd "$GS_ROOT"
enc="${1:?usage: scripts/curriculum.sh ENCODER [FIRST_STAGE]}"
first="${2:-1}"
cargo build --release --locked --bin graphscaler
gs=./target/release/graphscaler
stage() {
    local n="$1"
    shift
    [[ "$n" -lt "$first" ]] && return 0
    local out="checkpoints/stages/$enc-ppo-$n"
    [[ "$n" -eq 4 ]] && out="checkpoints/$enc-ppo"
    local init=()
    [[ "$n" -gt 1 ]] && init=(--init "checkpoints/stages/$enc-ppo-$((n - 1))")
    env "$@" "$gs" train --encoder "$enc" --algo ppo --scenario mix --seed "$SEED" \
        --steps "$STEPS" "${init[@]}" --out "$out"
}
SEED=1 STEPS=300000 stage 1 GRAPHSCALER_LEARN__REWARD__SLO_STEP=0
SEED=2 STEPS=200000 stage 2 GRAPHSCALER_LEARN__REWARD__SLO_STEP=1
SEED=3 STEPS=200000 stage 3 GRAPHSCALER_LEARN__REWARD__W_SLO=10
SEED=5 STEPS=200000 stage 4 GRAPHSCALER_LEARN__REWARD__W_SLO=10 \
    GRAPHSCALER_LEARN__ACTIONS__DECISIONS_PER_TICK=11
