#!/bin/bash
# Logical backup benchmark (not a test; issue 14): Zalando's pipeline against `pgherd-agent logical-backup`,
# side by side in one run, on the same PostgreSQL 15 database and the same S3 server (Garage on loopback).
#
# Usage: bench/logical-backup/run.sh    (as root on Debian 12; installs pigz and awscli idempotently)
# Env:   BENCH_SCALES     pgbench scales of the database, one row each (default "25 100": 4x apart)
#        BENCH_JOBS       `logical-backup run --jobs` (default 2)
#        BENCH_REPEAT     rounds per scale, interleaved; the table shows medians (default 3)
#        BENCH_KEEP       set: keep the work directory and servers (no cleanup)
#        PGHERD_AGENT_BIN (default target/release/pgherd-agent, built if missing)
#
# What is timed, for each scale (the database: pgbench_* tables in database `bench`, plus `postgres`):
#  - backup, Zalando: `pg_dumpall | pigz | aws s3 cp - s3://…/{epoch}.sql.gz --expected-size …`, as dump.sh
#    runs it (awscli v1 from PyPI, as Zalando's image installs it);
#  - backup, pgherd: `pgherd-agent logical-backup run` with the CronJob's environment (PGHOST given);
#  - restore, Zalando has none: `aws s3 cp … - | gunzip | psql` of the pg_dumpall script into a freshly
#    initdb'ed server; pgherd: `pgherd-agent logical-backup restore --all` (streamed, --jobs 1) into
#    another fresh server.
#  - concurrency, after the last scale: `bench` and a 2:1-compressible database `rnd` (~0.5 GB) dumped one
#    at a time and two at a time (`run --jobs 1|2`, the latter is the default).
#  - anchors: `pg_dumpall >/dev/null` and `pg_dump -Fc -Z0 bench >/dev/null`, the dump programs alone.
# MB/s: 10^6 bytes of pg_database_size() summed over the dumped databases, divided by wall time.
# Peak RSS: `/usr/bin/time -v` of the whole pipeline (a `bash -c`), whose "Maximum resident set size" is that
# of the largest single process in it (getrusage RUSAGE_CHILDREN): pg_dumpall, pigz, aws, psql, or the agent,
# pg_dump, pg_restore.
set -euo pipefail
export LC_ALL=C
SCALES=${BENCH_SCALES:-25 100}
JOBS=${BENCH_JOBS:-2}
REPEAT=${BENCH_REPEAT:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
AGENT=${PGHERD_AGENT_BIN:-$ROOT/target/release/pgherd-agent}
GARAGE=${PGHERD_CACHE:-$HOME/.cache/pgherd}/garage
VENV=$ROOT/.venv-bench-awscli

need=()
command -v pigz >/dev/null || need+=(pigz)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$VENV/bin/aws" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check awscli
fi
AWS=$VENV/bin/aws
[ -x "$GARAGE" ] || { echo "Garage not found at $GARAGE: run scripts/install-deps.sh" >&2; exit 1; }
[ -x "$AGENT" ] || (cd "$ROOT" && cargo build --release -p pgherd-agent --bin pgherd-agent)

WORK=$(mktemp -d /tmp/pgherd-bench-logical.XXXXXX)
chmod 755 "$WORK"
PIDS=()
asp() { runuser -u postgres -- "$@"; }
cleanup() {
  for d in "$WORK"/pg-*; do asp "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
if [ -z "${BENCH_KEEP:-}" ]; then trap cleanup EXIT; fi
# shellcheck source=bench/garage.sh
. "$(dirname "$0")/../garage.sh"

# --- S3: Garage on loopback (plain HTTP: both sides use the same endpoint) ---------------------------------
start_garage "$WORK/garage" 20G
ENDPOINT=http://127.0.0.1:$S3
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=garage

# --- PostgreSQL 15: the source, and fresh restore targets -------------------------------------------------
start_pg() { # name → port on stdout
  local d=$WORK/pg-$1 port; port=$(free_port)
  chown postgres "$WORK"
  asp "$PGBIN/initdb" -D "$d" -A trust -U postgres >/dev/null
  cat >>"$d/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_buffers = 512MB
max_wal_size = 8GB
fsync = off
EOF
  asp "$PGBIN/pg_ctl" -D "$d" -l "$d.log" -w start >/dev/null
  echo "$port"
}
stop_pg() { asp "$PGBIN/pg_ctl" -D "$WORK/pg-$1" -m immediate stop >/dev/null; rm -rf "$WORK/pg-$1"; }
SRC=$(start_pg src)
q() { "$PGBIN/psql" -h "$WORK" -p "$1" -U postgres -X -qAt -d "${3:-postgres}" -c "$2"; }

lb_env() { # port
  echo SCOPE=bench LOGICAL_BACKUP_PROVIDER=s3 LOGICAL_BACKUP_S3_BUCKET=$BUCKET LOGICAL_BACKUP_S3_BUCKET_PREFIX=spilo \
    LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX=/bench LOGICAL_BACKUP_S3_REGION=garage LOGICAL_BACKUP_S3_ENDPOINT=$ENDPOINT \
    PGHOST=$WORK PGPORT=$1 PGUSER=postgres PGDATABASE=postgres PG_VERSION=15 LOGICAL_BACKUP_JOBS=$JOBS
}
# measure OUT CMD: wall seconds and peak RSS (KiB) of a bash -c pipeline into OUT
measure() {
  local out=$1; shift
  local t0; t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$out.time" bash -c "set -o pipefail; $*" >"$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
  local t1=$EPOCHREALTIME
  echo "$(python3 -c "print(f'{$t1 - $t0:.2f}')") $(awk '/Maximum resident/ {print $6}' "$out.time")" >"$out"
}

# stats FILE: "median_wall [min–max] max_rss_kib" over the repetitions recorded in FILE
stats() {
  python3 - "$1" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
w = [float(r[0]) for r in rows]
print(statistics.median(w), min(w), max(w), max(int(r[1]) for r in rows))
PY
}

ROWS=()
for scale in $SCALES; do
  q "$SRC" "DROP DATABASE IF EXISTS bench" >/dev/null 2>&1
  q "$SRC" "CREATE DATABASE bench" >/dev/null
  "$PGBIN/pgbench" -h "$WORK" -p "$SRC" -U postgres -i -q -s "$scale" bench >/dev/null 2>&1
  q "$SRC" "CHECKPOINT" >/dev/null
  bytes=$(q "$SRC" "SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname NOT IN ('template0','template1')")
  mb=$(python3 -c "print(f'{$bytes/1e6:.0f}')")
  for _ in $(seq "$REPEAT"); do
    zkey=s3://$BUCKET/spilo/zalando-$scale/logical_backups/$(date +%s).sql.gz
    # Anchors: the dump programs alone, to /dev/null (what no pipeline can beat on this server).
    measure "$WORK/m" "$PGBIN/pg_dumpall -h $WORK -p $SRC -U postgres >/dev/null"; cat "$WORK/m" >>"$WORK/ad-$scale"
    measure "$WORK/m" "$PGBIN/pg_dump -h $WORK -p $SRC -U postgres -Fc -Z0 bench >/dev/null"; cat "$WORK/m" >>"$WORK/ap-$scale"
    measure "$WORK/m" "$PGBIN/pg_dumpall -h $WORK -p $SRC -U postgres | pigz | $AWS s3 cp --endpoint-url $ENDPOINT - $zkey --expected-size $((bytes / 5))"
    cat "$WORK/m" >>"$WORK/zb-$scale"
    measure "$WORK/m" "env $(lb_env "$SRC") $AGENT logical-backup run"; cat "$WORK/m" >>"$WORK/pb-$scale"
    zsize=$($AWS s3 ls --endpoint-url "$ENDPOINT" "$zkey" | awk '{print $3}')
    # shellcheck disable=SC2046 # lb_env prints VAR=value words for env
    psize=$(env $(lb_env "$SRC") "$AGENT" logical-backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')

    DST=$(start_pg zr)
    measure "$WORK/m" "$AWS s3 cp --endpoint-url $ENDPOINT $zkey - | gunzip | $PGBIN/psql -h $WORK -p $DST -U postgres -X -q -d postgres >/dev/null"
    cat "$WORK/m" >>"$WORK/zr-$scale"
    stop_pg zr
    DST=$(start_pg pr)
    measure "$WORK/m" "env $(lb_env "$DST") $AGENT logical-backup restore --all"; cat "$WORK/m" >>"$WORK/pr-$scale"
    rows=$(q "$DST" "SELECT count(*) FROM pgbench_accounts" bench)
    [ "$rows" = $((scale * 100000)) ] || { echo "pgherd restore has $rows accounts" >&2; exit 1; }
    stop_pg pr
  done
  # Remove this scale's backups so the next scale's run has the prefix to itself.
  $AWS s3 rm --endpoint-url "$ENDPOINT" --recursive --quiet "s3://$BUCKET/spilo/bench/"

  cell() { # stats file → "MB/s [min–max]" and peak RSS MiB
    read -r med lo hi rss < <(stats "$1")
    python3 -c "b=$bytes/1e6; print(f'{b/$med:.0f} [{b/$hi:.0f}–{b/$lo:.0f}] | {$rss/1024:.0f}')"
  }
  mbs() { python3 -c "print(f'{$1/1e6:.1f}')"; }
  ROWS+=("| $scale ($mb MB) | Zalando \`pg_dumpall \| pigz \| aws s3 cp -\` / \`aws s3 cp \| gunzip \| psql\` | $(cell "$WORK/zb-$scale") | $(cell "$WORK/zr-$scale") | $(mbs "$zsize") |")
  ROWS+=("| $scale ($mb MB) | pgherd \`logical-backup run\` / \`restore --all\` | $(cell "$WORK/pb-$scale") | $(cell "$WORK/pr-$scale") | $(mbs "$psize") |")
  ROWS+=("| $scale ($mb MB) | anchor: \`pg_dumpall >/dev/null\` | $(cell "$WORK/ad-$scale") | – | – | – |")
  ROWS+=("| $scale ($mb MB) | anchor: \`pg_dump -Fc -Z0 bench >/dev/null\` | $(cell "$WORK/ap-$scale") | – | – | – |")
done

# Databases dumped at the same time (`run --jobs`): the last scale's `bench` plus `rnd`, a database of hex
# text that compresses only about 2:1 (so each stream fills many 16 MiB upload parts).
q "$SRC" "CREATE DATABASE rnd" >/dev/null
q "$SRC" "CREATE TABLE r AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) AS v
          FROM generate_series(1, 4000000) g" rnd >/dev/null
q "$SRC" "CHECKPOINT" >/dev/null
bytes=$(q "$SRC" "SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname NOT IN ('template0','template1')")
mb=$(python3 -c "print(f'{$bytes/1e6:.0f}')")
for _ in $(seq "$REPEAT"); do
  for j in 1 2; do
    measure "$WORK/m" "env $(lb_env "$SRC") LOGICAL_BACKUP_JOBS=$j $AGENT logical-backup run"; cat "$WORK/m" >>"$WORK/jobs-$j"
  done
done
# shellcheck disable=SC2046 # lb_env prints VAR=value words for env
psize=$(env $(lb_env "$SRC") "$AGENT" logical-backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')
JROWS=()
for j in 1 2; do
  JROWS+=("| bench + rnd ($mb MB) | pgherd \`logical-backup run --jobs $j\` | $(cell "$WORK/jobs-$j") | $(mbs "$psize") |")
done

echo
echo "Medians of $REPEAT rounds [min–max]; peak RSS is the largest process of the pipeline over all rounds."
echo "| pgbench scale (database size) | pipeline | backup MB/s | backup peak RSS MiB | restore MB/s | restore peak RSS MiB | stored MB |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "| databases (size) | pipeline | backup MB/s | backup peak RSS MiB | stored MB |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${JROWS[@]}"
