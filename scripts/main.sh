#!/usr/bin/env bash
# The main job on the embedded default, the twin: installs what it needs (libtorch comes from the
# torch wheel in .venv), builds graphscaler and graphscaler-learn, runs the whole streaming loop once in process with the shipped
# GAT-PPO (twin -> graph job -> policy stage -> actuator -> twin, `graphscaler run`), then the static manifests,
# the Kubernetes HPA, the tuned HPA and the shipped GAT-PPO checkpoint (checkpoints/gat-ppo) side
# by side on Online Boutique under the four load shapes, 5 replays of 4 hours each. Extra
# arguments go to `graphscaler eval`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
"$gs" run --scenario rush --duration 4h --policy gat-ppo
echo
exec "$gs" eval \
    --policies static,hpa,tuned-hpa,gat-ppo --scenarios all --replays 5 --duration 4h --out results "$@"
