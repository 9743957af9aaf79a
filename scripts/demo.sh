#!/usr/bin/env bash
# Quick start, command 1: the whole system on this machine. A Kubernetes API stand-in with its controllers
# and a podman pod runner (tests/src/kube/, docs/kube-standin.md), pgherd installed from its Helm chart with
# kubectl, and Zalando's minimal manifest running as pods of the real images.
#   scripts/demo.sh         install what is missing, build binaries and images, start; Ctrl-C stops everything
#   scripts/demo.sh stop    stop a demo running in another terminal; removes its containers and network
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-up}" = "stop" ]; then
  exec target/debug/pgherd-demo stop
fi
scripts/install-deps.sh
scripts/install-tools.sh
cargo build --workspace --bins
PGHERD_IMAGE_PROFILE=debug scripts/build-images.sh
exec target/debug/pgherd-demo up
