#!/usr/bin/env bash
# The HPA frontier and the learned policies against it (docs/hpa.md#the-frontier), in the served
# loop: `graphscaler hpa-sweep` over CPU targets 30–90 % on the four shapes and the burst
# generator (5 replays of 4 hours, seeds 1–5), then `graphscaler eval --frontier` for the
# policies in $POLICIES (default: the tuned HPA and the shipped GAT-PPO) on the same scenarios
# and seeds. Writes results/frontier/ (the sweep: frontier.csv, frontier-<scenario>.png) and
# results/frontier-eval/ (the policies' runs and their frontier plots). Extra arguments go to
# both commands.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
scenarios=off-peak,peak,rush,fluctuating,burst
"$gs" hpa-sweep --targets 30,40,50,60,70,80,90 --scenarios "$scenarios" --replays 5 \
    --duration 4h --resume --out results/frontier "$@"
"$gs" eval --policies "${POLICIES:-tuned-hpa,gat-ppo}" --scenarios "$scenarios" --replays 5 \
    --duration 4h --resume --frontier results/frontier/frontier.csv --out results/frontier-eval "$@"
