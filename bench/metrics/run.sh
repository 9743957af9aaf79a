#!/bin/bash
# Metrics exporter benchmark (not a test): CPU time and wall time per scrape, and RSS, of pgherd-agent's
# exporter against prometheus-postgres-exporter (Debian package), side by side in one run, on the same
# PostgreSQL 15 and the same query set: the built-in set (agent/src/metrics/default_queries.yaml) is fed to
# postgres_exporter through --extend.query-path, with its own built-in metrics and collectors switched off.
#
# Usage: bench/metrics/run.sh [SCRAPES]   (as root on Debian 12; installs the exporter idempotently)
# Env:   PGHERD_AGENT_BIN (default: target/release/pgherd-agent, built if missing)
set -euo pipefail
N=${1:-200}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
AGENT=${PGHERD_AGENT_BIN:-$ROOT/target/release/pgherd-agent}
QUERIES=$ROOT/agent/src/metrics/default_queries.yaml

if ! command -v prometheus-postgres-exporter >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus-postgres-exporter >/dev/null
  # The package starts its own service where systemd runs; this benchmark uses its own instance.
  systemctl stop prometheus-postgres-exporter 2>/dev/null || true
fi
[ -x "$AGENT" ] || (cd "$ROOT" && cargo build --release -p pgherd-agent --bin pgherd-agent)

WORK=$(mktemp -d /tmp/pgherd-bench-metrics.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${BENCH_KEEP:-}" ] && trap - EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
chown postgres "$WORK"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT -k $WORK -c listen_addresses='' -c max_connections=50" start >/dev/null
# Some activity so the statistics views have rows.
psql -h "$WORK" -p "$PGPORT" -U postgres -qc "CREATE TABLE t AS SELECT g AS id FROM generate_series(1,100000) g; ANALYZE t" postgres

start_pgherd() { # port ttl; sets STARTED
  PGHERD_METRICS_PORT=$1 PGHERD_METRICS_CACHE_TTL=$2 "$AGENT" metrics-exporter \
    --socket-dir "$WORK" --pg-port "$PGPORT" --data-dir "$WORK/data" >"$WORK/pgherd-$1.log" 2>&1 &
  STARTED=$!; PIDS+=("$STARTED")
}
P1=$(free_port); start_pgherd "$P1" 0; PID1=$STARTED
P3=$(free_port); start_pgherd "$P3" 10; PID3=$STARTED

# postgres_exporter: only our query file; every built-in metric and collector off.
P2=$(free_port)
# postgres_exporter 0.11 ignores `runonserver` in extend files: give it only the queries PostgreSQL 15 runs
# (the pgherd engine skips the >= 17 variants itself), so neither exporter counts failing queries. Keys get
# pgherd's `pgherd_` prefix, so both expose the same series names (and none collides with the exporter's own
# pg_database collector, which --disable-default-metrics leaves on in 0.11).
python3 - "$QUERIES" "$WORK/pg15-queries.yaml" <<'PY'
import sys, yaml
q = yaml.safe_load(open(sys.argv[1]))
keep = {"pgherd_" + k: v for k, v in q.items() if ">=17" not in str(v.get("runonserver", "")).replace(" ", "")}
yaml.safe_dump(keep, open(sys.argv[2], "w"), sort_keys=True)
PY
# (0.11, Debian 12's version, has no collector flags; later versions do.)
NOCOLL=$(prometheus-postgres-exporter --help 2>&1 | { grep -o -- '--\[no-\]collector\.[a-z_]*' || true; } | sed 's/--\[no-\]/--no-/' | sort -u | tr '\n' ' ')
DATA_SOURCE_NAME="host=$WORK port=$PGPORT user=postgres dbname=postgres sslmode=disable" \
  prometheus-postgres-exporter --web.listen-address="127.0.0.1:$P2" --disable-default-metrics \
  --disable-settings-metrics --extend.query-path="$WORK/pg15-queries.yaml" $NOCOLL >"$WORK/pgexp.log" 2>&1 &
PID2=$!; PIDS+=($PID2)

wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/metrics" >/dev/null && return; sleep 0.1; done; echo "exporter on $1 did not start" >&2; exit 1; }
for p in $P1 $P2 $P3; do wait_up "$p"; done
for p in $P1 $P2 $P3; do for _ in 1 2 3; do curl -s "http://127.0.0.1:$p/metrics" >/dev/null; done; done

TCK=$(getconf CLK_TCK)
cpu() { awk -v t="$TCK" '{ sub(/.*\) /, ""); split($0, f, " "); printf "%d", f[12] + f[13] }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
samples() { curl -s "http://127.0.0.1:$1/metrics" | grep -vc '^#'; }
sql_samples() { curl -s "http://127.0.0.1:$1/metrics" | grep -v '^#' | grep -Evc '^(pgherd_(up|exporter_|agent_|backup_|wal_push|volume_)|process_|go_|promhttp_|pg_exporter_|pg_scrape_|pg_up|postgres_exporter_)'; }

measure() { # name port pid
  local c0 c1 times
  c0=$(cpu "$3")
  times=$(for _ in $(seq "$N"); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$2/metrics"; done)
  c1=$(cpu "$3")
  echo "$times" | sort -n | awk -v name="$1" -v n="$N" -v cpu=$((c1 - c0)) -v tck="$TCK" -v rss="$(rss_kib "$3")" \
    -v all="$(samples "$2")" -v sql="$(sql_samples "$2")" '
    { t[NR] = $1; s += $1 }
    END { printf "| %-34s | %7.2f | %7.2f | %7.2f | %8.2f | %7.1f | %5d | %5d |\n",
          name, 1000*s/n, 1000*t[int(n*0.5)], 1000*t[int(n*0.95)], 1000*cpu/tck/n, rss/1024, all, sql }'
}

echo
echo "PostgreSQL 15, $N sequential scrapes per exporter, $(nproc) CPUs, $(date -u +%F)."
echo "pgherd: $("$AGENT" --version); postgres_exporter: $(prometheus-postgres-exporter --version 2>&1 | head -1)"
echo
echo "| Exporter                           | wall avg ms | p50 ms | p95 ms | CPU ms/scrape | RSS MiB | samples | SQL samples |"
echo "|------------------------------------|-----:|-----:|-----:|------:|------:|------:|------:|"
measure "pgherd-agent (cache off, TTL 0)" "$P1" "$PID1"
measure "prometheus-postgres-exporter" "$P2" "$PID2"
measure "pgherd-agent (default cache, 10 s)" "$P3" "$PID3"
echo
grep -h -i 'error' "$WORK"/pgherd-*.log "$WORK/pgexp.log" | head -5 || true
