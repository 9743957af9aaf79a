#!/usr/bin/env bash
# Quick start, command 2: the whole test suite, from a fresh Debian 12 machine (installs what it needs).
# Unit, golden and parity tests run next to integration tests that start real etcd, Garage, PostgreSQL
# and Patroni on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests run the agent binary, so build it before the tests start.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast
