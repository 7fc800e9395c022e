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

ensure_test_services() {
    ensure_apt_packages
    ensure_tansu
    ensure_torch
}
