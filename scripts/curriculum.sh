#!/usr/bin/env bash
# The PPO training curriculum behind the shipped checkpoints/gat-ppo and checkpoints/mlp-ppo
# (docs/learning.md#results): five stages, each starting from the one before (`--init`), on one
# libtorch thread (deterministic: the same commands give the same weights).
#
#   1. 300,000 decisions, the graded SLO term (slo_step 0), 3 decisions per tick;
#   2. 200,000 more with the indicator SLO term (slo_step 1, the default);
#   3. 200,000 more with w_slo 10;
#   4. 200,000 more with w_slo 10 and up to 11 decisions per tick (every service of Online
#      Boutique can change in one tick);
#   5. 100,000 more with w_slo 50 and learning rate 1e-4 (11 decisions per tick): a violating
#      tick now costs more than keeping headroom for a whole rush costs in slack.
#
# Usage: scripts/curriculum.sh ENCODER [FIRST_STAGE]   (ENCODER: gat, gcn, dysat or mlp)
# Stages go to checkpoints/stages/<encoder>-ppo-<n>, the last one to checkpoints/<encoder>-ppo.
# About 50 minutes for GAT, 25 for MLP, on one core.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
enc="${1:?usage: scripts/curriculum.sh ENCODER [FIRST_STAGE]}"
first="${2:-1}"
stage() {
    local n="$1"
    shift
    [[ "$n" -lt "$first" ]] && return 0
    local out="checkpoints/stages/$enc-ppo-$n"
    [[ "$n" -eq 5 ]] && out="checkpoints/$enc-ppo"
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
SEED=11 STEPS=100000 stage 5 GRAPHSCALER_LEARN__REWARD__W_SLO=50 \
    GRAPHSCALER_LEARN__ACTIONS__DECISIONS_PER_TICK=11 GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE=0.0001
