#!/usr/bin/env bash
# Quick start, command 1: run etcd, Garage and a 3-member pgherd cluster on this machine.
#   scripts/demo.sh         install what is missing, build, start; Ctrl-C stops everything
#   scripts/demo.sh stop    stop a demo running in another terminal
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-up}" = "stop" ]; then
  exec target/debug/pgherd-demo stop
fi
scripts/install-deps.sh
cargo build --workspace --bins
exec target/debug/pgherd-demo up
