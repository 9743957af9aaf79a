#!/bin/bash
# Coordinator resync benchmark (not a test): what one full resync of N clusters that are already in sync
# costs pgherd-coordinator, for N = 1, 100 and 1,000, against the Kubernetes API stand-in
# (tests/src/kube/, in the driver's process): wall time, API requests and writes, the coordinator's CPU
# time and RSS. N = 1 is the anchor: the fixed cost of a pass. Measured against the stand-in, not a real
# API server (docs/kube-standin.md): no etcd, no admission, no authorization, no network hop.
#
# What is measured: a first coordinator reconciles the N clusters (creating every object; pods never
# start, there is no kubelet) and is stopped with SIGTERM, releasing its Lease; a second one starts, and
# its startup pass (list and watch, then a reconcile of every cluster) is the resync: the pass a restart or
# a failover to the other replica makes. The wall time runs from spawning it to its last request other
# than the Lease's. The driver is tests/src/bin/pgherd-bench-resync.rs.
#
# Usage: bench/coordinator/run.sh [N ...]   (default 1 100 1000; builds both binaries in release mode)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build -q --release -p pgherd-coordinator --bin pgherd-coordinator -p pgherd-tests --bin pgherd-bench-resync
"$ROOT/target/release/pgherd-bench-resync" "$@"
