#!/usr/bin/env bash
# Installs what graphscaler needs on a fresh Debian machine, skipping what is already there.
# Sourced by every script: scripts/test.sh calls ensure_test_services, main.sh and the campaigns
# release_build (and train_resumable); safe to run again.
#
# What it checks or installs:
#   - a Rust toolchain (cargo) — required; it cannot be downloaded here, so its absence is an error
#   - Debian packages listed in APT_PACKAGES (Prometheus for the end-to-end tests; plots use the
#     vendored DejaVu font, so no font package is needed)
#   - the tansu Kafka-protocol broker (cargo install, about 10 minutes the first time) for the
#     bus tests
#   - a Python venv in .venv with torch==2.13.0 (libtorch for tch, pipelines/learn; about 90 s
#     and 4.7 GB the first time) and torch_geometric==2.8.1 (the reference of the GNN parity
#     tests); .venv/torch links to the torch package, which .cargo/config.toml names as LIBTORCH
set -euo pipefail

GS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GS_ROOT

# prometheus: the real Prometheus server the end-to-end tests scrape the twin with; python3-venv:
# the venv that holds torch.
# libssl-dev, pkg-config: librdkafka with TLS and SASL (rdkafka's `ssl` feature).
APT_PACKAGES=(prometheus python3-venv libssl-dev pkg-config)

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            log "cargo not found: install a Rust toolchain (https://rustup.rs) and rerun"
            exit 1
        fi
    fi
    log "rust: $(cargo --version)"
}

ensure_apt_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    fi
}

TANSU_VERSION=0.6.0

ensure_tansu() {
    if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        return
    fi
    log "installing the tansu broker $TANSU_VERSION (cargo install; about 10 minutes)"
    cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql
}

TORCH_VERSION=2.13.0
PYG_VERSION=2.8.1

ensure_torch() {
    local venv="$GS_ROOT/.venv"
    if ! "$venv/bin/python" -c "import torch, torch_geometric, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' and torch_geometric.__version__ == '$PYG_VERSION' else 1)" 2>/dev/null; then
        log "installing torch==$TORCH_VERSION and torch_geometric==$PYG_VERSION into .venv (about 90 s, 4.7 GB)"
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install -q "torch==$TORCH_VERSION" "torch_geometric==$PYG_VERSION"
    fi
    local pkg
    pkg="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
    ln -sfn "$pkg" "$venv/torch"
    log "libtorch: torch $TORCH_VERSION in $pkg"
}

# What every command needs; test.sh adds the test services (ensure_test_services).
ensure_rust

# The scripts that run the release binary (main.sh and the campaigns): what it needs, the build,
# and $gs naming it (under CARGO_TARGET_DIR when that is set); the working directory becomes the
# repository's root.
release_build() {
    ensure_apt_packages
    ensure_torch
    cd "$GS_ROOT"
    cargo build --release --locked --bins
    gs="${CARGO_TARGET_DIR:-target}/release/graphscaler"
    export gs
}

# `$gs train ARGS... --out DST` under $TIME_LIMIT (default 10h), resumed from DST.resume/ where an
# earlier run stopped (SAC's with its replay buffer); a training already done (DST.json) is
# skipped. Returns 1 when the training failed, 3 when it stopped at the time limit (rerun to
# resume).
train_resumable() {
    local dst=$1
    shift
    [ -f "$dst.json" ] && return 0
    local resume=()
    [ -f "$dst.resume/state.json" ] && resume=(--resume)
    "$gs" train "$@" --out "$dst" --time-limit "${TIME_LIMIT:-10h}" "${resume[@]}" ||
        { echo "training $dst failed" >&2; return 1; }
    [ -f "$dst.json" ] || { echo "$dst stopped at the time limit: rerun to resume" >&2; return 3; }
}
export -f train_resumable

# The campaigns' shared steps (scripts/baselines.sh, scripts/distribution.sh).

# The number of decisions a checkpoint (its .json manifest) was trained for.
steps_of() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["training"]["steps"])' "$1"
}
export -f steps_of

# `$gs eval ARGS... --out DST`, resumable: the runs land in DST/runs.csv only when all are done; a
# failed evaluation returns 1, its journal left in DST.partial for the rerun's `--resume`.
eval_into() {
    local dst=$1
    shift
    [ -f "$dst/runs.csv" ] && return 0
    "$gs" eval "$@" --threads 1 --resume --no-plots --out "$dst.partial" || return 1
    rm -rf "$dst"
    mv "$dst.partial" "$dst"
}
export -f eval_into

# Concatenates runs.csv files ($2...) into $1, one header.
pool() { head -n 1 "$2" >"$1" && for f in "${@:2}"; do tail -n +2 "$f"; done >>"$1"; }
export -f pool

# The candidates of the training DST named RUN, as `eval --policies` takes them:
# RUN-at<decisions>=<checkpoint>,... for every checkpoint `--keep-every` kept and the final model.
candidates_of() {
    local dst=$1 run=$2 final c at list
    final=$(steps_of "$dst.json")
    list="$run-at$final=$dst"
    for c in "$dst"-at*.json; do
        [ -e "$c" ] || continue
        at=${c##*-at}
        at=${at%.json}
        [ "$at" = "$final" ] || list="$list,$run-at$at=${c%.json}"
    done
    echo "$list"
}
export -f candidates_of

# Validation under both act rules (`learn.act`): CANDIDATES (NAME=PATH,...) evaluated as
# NAME-mode by their mode and as NAME-sample by drawing from them, `eval_into DST-<rule> ARGS...`;
# both rules' runs pooled into DST.csv for scripts/select.py. A broad policy's mode can be
# degenerate (docs/learning.md#how-a-policy-acts), so the rule is chosen with the checkpoint.
validate_both_rules() {
    local dst=$1 candidates=$2
    shift 2
    local rule named files=()
    for rule in mode sample; do
        named=$(echo "$candidates" | sed -E "s/([^=,]+)=/\1-$rule=/g")
        GRAPHSCALER_LEARN__ACT=$rule eval_into "$dst-$rule" --policies "$named" "$@" || return 1
        files+=("$dst-$rule/runs.csv")
    done
    pool "$dst.csv" "${files[@]}"
}
export -f validate_both_rules

# Chooses a training's checkpoint and act rule on VALIDATION_CSV (scripts/select.py: DIR/validation.md,
# DIR/chosen.txt) and copies it into DIR/model.safetensors and DIR/model.json, the rule written
# into the manifest's `act` (what `learn.act = "checkpoint"` serves it by). Candidates are
# OUT/<candidate>, or FINAL for the final model.
keep_chosen() {
    local validation=$1 dir=$2 out=$3 final=$4
    local chosen run candidate rule at path
    chosen=$(python3 scripts/select.py "$validation" "$dir/validation.md") || return 1
    read -r run candidate rule <<<"$chosen"
    at=${candidate##*-at}
    path="$out/$candidate"
    [ -f "$path.json" ] || path="$final"
    [ "$(steps_of "$path.json")" = "$at" ] || { echo "$candidate: no checkpoint at $at decisions" >&2; return 1; }
    cp "$path.safetensors" "$dir/model.safetensors"
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["act"]=sys.argv[3]; open(sys.argv[2],"w").write(json.dumps(m, indent=2) + "\n")' \
        "$path.json" "$dir/model.json" "$rule"
    echo "$chosen" >"$dir/chosen.txt"
}
export -f keep_chosen

ensure_test_services() {
    ensure_apt_packages
    ensure_tansu
    ensure_torch
}
