#!/usr/bin/env bash
# Every test: installs what it needs, then runs the workspace's unit, integration, property and
# doc tests. `.ci/run` calls this script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ensure_test_services
cd "$GS_ROOT"
cargo test --workspace --locked "$@"
# The slim image's build: the command line without the learning crate (no libtorch).
cargo check --locked -p graphscaler --no-default-features --bins
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
