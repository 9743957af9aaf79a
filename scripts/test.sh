#!/usr/bin/env bash
# Quick start, command 2: the whole test suite, from a fresh Debian 12 machine (installs what it needs).
# Unit, golden and parity tests run next to integration tests that start real etcd, Garage, PostgreSQL
# and Patroni on loopback, the images under podman, and offline checks of the Helm chart and deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-tools.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests run the agent binary, so build it before the tests start.
cargo build --workspace --bins
# The image tests run the images with these same (debug) binaries: no second, optimised build in CI.
PGHERD_IMAGE_PROFILE=debug scripts/build-images.sh
cargo nextest run --workspace --no-fail-fast
