#!/usr/bin/env bash
# Image benchmark: image sizes, the agent's memory inside a running member, and container start to
# "accepting connections", each next to an anchor measured in the same run:
#   - sizes: the Debian base image the database image starts from (Spilo's own image cannot be pulled here;
#     BENCHMARKS.md cites its published size);
#   - memory: Patroni's RSS in the same member (Spilo runs Patroni too, under runit instead of the agent);
#   - start time: the same image started as a bare PostgreSQL (initdb + postgres, no agent, no Patroni, no
#     DCS): the floor any Spilo-like image has to pay.
# Needs the release images (scripts/build-images.sh) and Debian's etcd and psql (scripts/install-deps.sh).
# Usage: bench/images/run.sh [runs]   (default 5). Prints a Markdown table.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-5}
export CONTAINERS_CONF=$repo/.config/containers.conf
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
image=localhost/pgherd-postgres:$version
coordinator=localhost/pgherd-coordinator:$version
base=docker.io/library/debian:bookworm-slim
for i in "$image" "$coordinator" "$base"; do
  podman image exists "$i" || { echo "$i is missing: run scripts/build-images.sh" >&2; exit 1; }
done

net=pgherd-bench-$$
work=$(mktemp -d)
etcd_pid=
cleanup() {
  podman ps -aq --filter "network=$net" | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
  podman rm -f -t 0 "$net-bridge" >/dev/null 2>&1 || true
  [ -z "$etcd_pid" ] || kill "$etcd_pid" 2>/dev/null || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
podman network create "$net" >/dev/null
# netavark brings the bridge (and the gateway address etcd binds to) up with the first container.
podman run -d --name "$net-bridge" --network "$net" "$base" sleep infinity >/dev/null
gw=$(podman network inspect "$net" --format '{{range .Subnets}}{{.Gateway}}{{end}}')
prefix=${gw%.*}
etcd --data-dir "$work/etcd" --listen-client-urls "http://$gw:23790" --advertise-client-urls "http://$gw:23790" \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster default=http://127.0.0.1:23800 --log-level error >"$work/etcd.log" 2>&1 &
etcd_pid=$!
until curl -sf "http://$gw:23790/health" >/dev/null; do sleep 0.1; done

ms() { date +%s%3N; }
ready() { pg_isready -q -h "$1" -p 5432 -t 1; }
rss_kib() { podman exec "$1" sh -c "grep VmRSS /proc/$2/status" | awk '{print $2}'; }

agent_start=() bare_start=() agent_rss=() watch_rss=() patroni_rss=()
for n in $(seq 1 "$runs"); do
  ip=$prefix.$((10 + n)); name=bench-member-$n
  t0=$(ms)
  podman run -d --name "$name" --hostname "$name" --network "$net" --ip "$ip" --memory 512m \
    -e SCOPE="bench$n" -e POD_IP="$ip" -e PGVERSION=15 -e ETCD3_HOST="$gw:23790" \
    -e PGPASSWORD_SUPERUSER=bench -e PGPASSWORD_STANDBY=bench "$image" >/dev/null
  until ready "$ip"; do sleep 0.05; done
  agent_start+=($(($(ms) - t0)))
  # Settle until Patroni leads, then read memory.
  until curl -sf "http://$ip:8008/primary" >/dev/null; do sleep 0.2; done
  sleep 5
  agent_rss+=("$(rss_kib "$name" 1)")
  watch_rss+=("$(rss_kib "$name" "$(podman exec "$name" pgrep -o -f 'pgherd-agent upgrade-watch')")")
  patroni_rss+=("$(rss_kib "$name" "$(podman exec "$name" pgrep -o -f 'bin/patroni')")")
  podman rm -f -t 0 "$name" >/dev/null

  ip=$prefix.$((100 + n)); name=bench-bare-$n
  t0=$(ms)
  podman run -d --name "$name" --network "$net" --ip "$ip" --user postgres --entrypoint bash "$image" -c \
    'initdb -D /tmp/data -A trust >/dev/null && exec postgres -D /tmp/data -c listen_addresses="*"' >/dev/null
  until ready "$ip"; do sleep 0.05; done
  bare_start+=($(($(ms) - t0)))
  podman rm -f -t 0 "$name" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size_mb() { podman image inspect "$1" --format '{{.Size}}' | awk '{printf "%.0f", $1/1e6}'; }
gz_mb() { podman save "$1" 2>/dev/null | gzip -1 | wc -c | awk '{printf "%.0f", $1/1e6}'; }

echo "Runs: $runs (medians)"
echo
echo "| Image | size MB | gzip -1 of podman save, MB |"
echo "|---|---:|---:|"
for i in "$image" "$coordinator" "$base"; do echo "| \`$i\` | $(size_mb "$i") | $(gz_mb "$i") |"; done
echo
echo "| Start to accepting connections | median ms | all runs ms |"
echo "|---|---:|---|"
echo "| pgherd member (agent, configure, Patroni, initdb; Postgres up under Patroni) | $(median "${agent_start[@]}") | ${agent_start[*]} |"
echo "| anchor: bare initdb + postgres in the same image | $(median "${bare_start[@]}") | ${bare_start[*]} |"
echo
echo "| Memory inside a running member | median RSS MiB |"
echo "|---|---:|"
echo "| pgherd-agent (PID 1) | $(median "${agent_rss[@]}" | awk '{printf "%.1f", $1/1024}') |"
echo "| its child \`pgherd-agent upgrade-watch\` | $(median "${watch_rss[@]}" | awk '{printf "%.1f", $1/1024}') |"
echo "| anchor: Patroni in the same member | $(median "${patroni_rss[@]}" | awk '{printf "%.1f", $1/1024}') |"
