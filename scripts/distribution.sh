#!/usr/bin/env bash
# A graph policy trained on a distribution of topologies, evaluated on applications none of its
# training saw (issue 12 §2; docs/transfer.md#trained-on-a-distribution-of-topologies):
#
#   * training topologies: Online Boutique and seven generated applications (`graphscaler twin
#     synth-topology`, seeds 1-7 of 5, 8, 12, 16, 24, 32 and 40 services, each cluster sized to
#     its application), one `graphscaler train --topology ... --topology ...` (environment i on
#     topology i mod 8, every batch padded to the largest): GAT-PPO from fresh weights on
#     `bursty-mix`, $STEPS decisions (default 200000), training seeds 1-$SEEDS (default 3);
#   * $KEEP candidates per training (default 3) and the final model, chosen per training seed on
#     validation seeds 101-102 of peak, rush and burst on three of the training topologies
#     (Online Boutique, the 12- and the 32-service application), $VALIDATION_DURATION each
#     (default 1h; scripts/select.py), each candidate by its mode and by drawing from it, the
#     rule chosen with it (scripts/setup.sh's validate_both_rules, keep_chosen);
#   * the chosen checkpoint evaluated, by its rule, on held-out applications — generated seeds 101-103 of 10, 20
#     and 36 services and DeathStarBench's hotel reservation (data/topologies/hotel-reservation.json
#     under config/examples/hotel-reservation.toml) — on evaluation seeds 1-5 of peak, rush and
#     burst ($DURATION each, default 2h), beside the tuned HPA and the shipped GAT-PPO (trained on
#     Online Boutique alone), reported across training seeds (scripts/seeds.py).
#
# Like scripts/baselines.sh, each training is kept as it finishes in $KEPT/<name>-<seed>/ (default
# campaigns/distribution/, committed: the chosen checkpoint, the training curve, the validation
# and evaluation runs) and is not run again; the bulky rest goes to $OUT (default
# results/distribution/). The reference policies' runs are kept in $KEPT/reference/. When every
# training is kept, $KEPT/<held-out>.md summarises each held-out application. JOBS (default 1)
# trainings at a time; rerun after an interruption to resume. To try the script out in minutes:
# STEPS=256 SEEDS=1 KEEP=1 DURATION=5m VALIDATION_DURATION=5m KEPT=/tmp/d OUT=/tmp/d-out.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
release_build
export out=${OUT:-results/distribution}
export kept=${KEPT:-campaigns/distribution}
export steps=${STEPS:-200000}
seeds=${SEEDS:-3}
keep=${KEEP:-3}
export every=$(((steps + keep - 1) / keep))
export duration=${DURATION:-2h}
export vduration=${VALIDATION_DURATION:-1h}
export loads=peak,rush,burst
export name=gat-ppo-dist
mkdir -p "$out/topologies" "$out/validation" "$out/eval" "$kept"

# The topologies: generated ones are a function of (services, seed, the configuration's load).
export topo=$out/topologies
gen() { [ -f "$topo/$1.json" ] || "$gs" twin synth-topology --services "$2" --seed "$3" --out "$topo/$1.json" >/dev/null; }
train_topologies=()
i=1
for n in 5 8 12 16 24 32 40; do
    gen "train-$i" "$n" "$i"
    train_topologies+=(--topology "$topo/train-$i.json")
    i=$((i + 1))
done
export train_args="--topology data/topologies/online-boutique.json ${train_topologies[*]}"
i=101
for n in 10 20 36; do
    gen "held-$i" "$n" "$i"
    i=$((i + 1))
done
# held-out name, its topology, its configuration
export held="held-101:$topo/held-101.json:config/default.toml held-102:$topo/held-102.json:config/default.toml held-103:$topo/held-103.json:config/default.toml hotel-reservation:data/topologies/hotel-reservation.json:config/examples/hotel-reservation.toml"
export validation="online-boutique:data/topologies/online-boutique.json train-3:$topo/train-3.json train-6:$topo/train-6.json"

finish_one() {
    local seed=$1
    local run="$name-$seed"
    local dst="$out/$run" dir="$kept/$run"
    [ -d "$dir" ] && return 0
    # shellcheck disable=SC2086
    train_resumable "$dst" --encoder gat --algo ppo --scenario bursty-mix --steps "$steps" \
        --seed "$seed" --keep-every "$every" $train_args >>"$dst.log" 2>&1 ||
        { echo "training $run failed or stopped at the time limit: see $dst.log" >&2; return 1; }
    local candidates v vname vtopo vruns=()
    candidates=$(candidates_of "$dst" "$run")
    for v in $validation; do
        vname=${v%%:*}
        vtopo=${v#*:}
        validate_both_rules "$out/validation/$run/$vname" "$candidates" --topology "$vtopo" \
            --scenarios "$loads" --seed 101 --replays 2 --duration "$vduration" >>"$dst.log" 2>&1 ||
            { echo "validation of $run on $vname failed: see $dst.log" >&2; return 1; }
        vruns+=("$out/validation/$run/$vname.csv")
    done
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    pool "$dir.partial/validation-runs.csv" "${vruns[@]}"
    keep_chosen "$dir.partial/validation-runs.csv" "$dir.partial" "$out" "$dst"
    cp "$dst.csv" "$dir.partial/train.csv"
    local h hname rest htopo hcfg
    for h in $held; do
        hname=${h%%:*}
        rest=${h#*:}
        htopo=${rest%%:*}
        hcfg=${rest#*:}
        GRAPHSCALER_LEARN__ACT=checkpoint eval_into "$out/eval/$run/$hname" --config "$hcfg" --topology "$htopo" \
            --policies "$run=$dir.partial/model" --scenarios "$loads" --replays 5 \
            --duration "$duration" >>"$dst.log" 2>&1 ||
            { echo "evaluation of $run on $hname failed: see $dst.log" >&2; return 1; }
        cp "$out/eval/$run/$hname/runs.csv" "$dir.partial/eval-$hname.csv"
    done
    mv "$dir.partial" "$dir"
    echo "kept $run ($(cat "$dir/chosen.txt"))" >&2
}
export -f finish_one

# The tuned HPA and the shipped GAT-PPO (Online Boutique only) on the same held-out runs.
reference() {
    [ -d "$kept/reference" ] && return 0
    mkdir -p "$kept/reference.partial"
    local h hname rest htopo hcfg
    for h in $held; do
        hname=${h%%:*}
        rest=${h#*:}
        htopo=${rest%%:*}
        hcfg=${rest#*:}
        eval_into "$out/eval/reference/$hname" --config "$hcfg" --topology "$htopo" \
            --policies tuned-hpa,gat-ppo --scenarios "$loads" --replays 5 --duration "$duration" \
            >>"$out/reference.log" 2>&1 ||
            { echo "evaluation of the reference policies on $hname failed: see $out/reference.log" >&2; return 1; }
        cp "$out/eval/reference/$hname/runs.csv" "$kept/reference.partial/eval-$hname.csv"
    done
    mv "$kept/reference.partial" "$kept/reference"
}
export -f reference
{
    echo reference
    for s in $(seq 1 "$seeds"); do echo "$s"; done
} | xargs -P "${JOBS:-1}" -n 1 bash -c 'set -euo pipefail; if [ "$0" = reference ]; then reference; else finish_one "$0"; fi'

# Every training kept: per held-out application, the policies across training seeds.
for h in $held; do
    hname=${h%%:*}
    files=("$kept/reference/eval-$hname.csv")
    for s in $(seq 1 "$seeds"); do files+=("$kept/$name-$s/eval-$hname.csv"); done
    pool "$out/$hname-runs.csv" "${files[@]}"
    python3 scripts/seeds.py "$out/$hname-runs.csv" "$kept/$hname.md" slo_violation_pct caf actions_per_hour
done
