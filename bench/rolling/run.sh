#!/bin/bash
# Rolling update benchmark (not a test): what replacing every pod of a 3-member cluster costs the clients
# of its primary, pgherd's rolling update against the StatefulSet controller's own RollingUpdate order, side
# by side on one cluster on the Kubernetes stand-in (tests/src/kube/, docs/kube-standin.md) with the real
# images, Patroni and PostgreSQL under podman.
#
# What is measured: one persistent tokio-postgres client inserts a numbered row every 20 ms through the
# master Endpoints and reconnects to whatever they name after any error. For each update: the longest time
# between two acknowledged inserts, failed attempts, acknowledged rows missing afterwards, the time from
# the change to the cluster being whole again, and how the leader changed (a new timeline in Patroni's
# /history; the old primary seen demoted while alive is a switchover, deleted while leading a failover).
#   1. pgherd: a resource change in the manifest (replicas first, a switchover, the old primary last);
#   2. the anchor: the coordinator scaled to 0, the StatefulSet's updateStrategy set to RollingUpdate and its
#      template changed, so the StatefulSet controller deletes pods from the highest ordinal down, the
#      primary whenever its turn comes, with no switchover.
# The driver is tests/src/bin/pgherd-bench-rolling.rs. The stand-in runs the test images (:dev, debug
# binaries), as the system tests do.
#
# Usage: bench/rolling/run.sh [period-ms]   (default 20)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
# Builds the workspace's debug binaries (this driver among them) and the :dev images from them.
PGHERD_IMAGE_PROFILE=debug scripts/build-images.sh
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD)"
"$ROOT/target/debug/pgherd-bench-rolling" "$@"
