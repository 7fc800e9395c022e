#!/usr/bin/env bash
# Transfer to an application no policy was trained on (issue 12; docs/transfer.md): DeathStarBench's
# hotel reservation (data/topologies/hotel-reservation.json, written from its public manifests and
# sources, see its provenance) under config/examples/hotel-reservation.toml's load levels. The
# static manifests, the Kubernetes HPA, the tuned HPA (tuned on Online Boutique) and the shipped
# GAT-PPO checkpoint (trained on Online Boutique only) on the four shapes, the burst generator and
# the Azure trace, 5 replays of 4 hours each (seeds 1-5), in the served loop `graphscaler eval`
# runs. The shipped MLP-PPO is not among them: its input is sized to Online Boutique's 11
# services and it is refused on another topology (the command below shows the refusal).
# Writes results/transfer/hotel-reservation/. Extra arguments go to `graphscaler eval`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
cfg=config/examples/hotel-reservation.toml
scenarios="off-peak,peak,rush,fluctuating,burst,trace:data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv"
"$gs" eval --config "$cfg" --policies static,hpa,tuned-hpa,gat-ppo --scenarios "$scenarios" \
    --replays 5 --duration 4h --resume --out results/transfer/hotel-reservation "$@"
echo
echo "MLP-PPO on the same application (expected: refused, its input is sized to 11 services):"
if "$gs" eval --config "$cfg" --policies mlp-ppo --scenarios rush --replays 1 --duration 10m \
    --out results/transfer/hotel-reservation-mlp --no-plots 2>&1 | grep -i "error"; then :; fi
