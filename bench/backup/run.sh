#!/bin/bash
# Backup engine benchmark (not a test; issue 3): base backup and restore MB/s, and WAL segments archived per
# second, of pgherd-agent's native engine against pgBackRest (Debian package), side by side in one run, on
# the same PostgreSQL 15 cluster, the same S3 server (Garage behind one TLS endpoint) and comparable
# compression (zstd level 3 for both; lz4 for both).
#
# Usage: bench/backup/run.sh      (as root on Debian 12; installs pgbackrest and stunnel4 idempotently)
# Env:   BENCH_SCALE       pgbench scale of the backed-up database (default 100, about 1.5 GB)
#        BENCH_WAL_SCALE   pgbench scale of the table whose load makes each WAL backlog (default 128: ~88 segments)
#        BENCH_CODECS      codecs for base backups (default "zstd lz4"; WAL archiving always uses zstd)
#        BENCH_REPEAT      base backup/restore repetitions, interleaved; the table shows medians (default 3)
#        BENCH_PM2         1 (default): also pgBackRest with process-max=2 for zstd backup/restore
#        BENCH_PHASES      "backup wal" (default) or one of them
#        BENCH_KEEP        set: keep the work directory and servers (no cleanup)
#        PGHERD_AGENT_BIN  (default target/release/pgherd-agent, built if missing)
#        PGHERD_SOCKET_SERVER_BIN  (default: bench/backup/socket-server built into target/release; a path that
#                          does not exist skips the socket row)
#
# What is timed (everything on loopback, warm page cache, 24 GB RAM):
#  - backup:  `pgherd-agent backup push` (pg_basebackup -Ft -X fetch | sha256 | zstd | multipart upload)
#             vs `pgbackrest backup --type=full` (archive-check on: it waits for its end-of-backup WAL).
#  - restore: `pgherd-agent clone-with-wale` (download | decompress | untar | verify sha256) vs
#             `pgbackrest restore`, each into an empty directory; then an fsync of every restored file and
#             directory is timed separately and included in restore MB/s, so that neither tool is credited for
#             leaving dirty pages behind (pgBackRest fsyncs what it restores itself; pgherd does not).
#  - WAL:     a backlog of segments is produced with archiving paused (archive_command = ''), by loading a
#             pgbench table (`pgbench -i -I dtg -s $BENCH_WAL_SCALE walgen`); then the tool is set as
#             archive_command and the time until pg_stat_archiver.last_archived_wal reaches the last backlog
#             segment is measured. Once on an idle server, once with `pgbench -c 2 -T ...` running on the
#             backed-up database throughout the drain ("under pgbench"; its TPS is reported).
# MB are 10^6 bytes of the data directory without pg_wal (the same numerator for both tools).
set -euo pipefail
export LC_ALL=C
SCALE=${BENCH_SCALE:-100}
WAL_SCALE=${BENCH_WAL_SCALE:-128}
CODECS=${BENCH_CODECS:-zstd lz4}
PM2=${BENCH_PM2:-1}
REPEAT=${BENCH_REPEAT:-3}
PHASES=${BENCH_PHASES:-backup wal}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
AGENT=${PGHERD_AGENT_BIN:-$ROOT/target/release/pgherd-agent}
SOCKSRV_DIR=$ROOT/bench/backup/socket-server
SOCKSRV=${PGHERD_SOCKET_SERVER_BIN:-$ROOT/target/release/pgherd-bench-socket-server}
GARAGE=${PGHERD_CACHE:-$HOME/.cache/pgherd}/garage

need=()
command -v pgbackrest >/dev/null || need+=(pgbackrest)
command -v stunnel4 >/dev/null || need+=(stunnel4)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x "$GARAGE" ] || { echo "Garage not found at $GARAGE: run scripts/install-deps.sh" >&2; exit 1; }
[ -x "$AGENT" ] || (cd "$ROOT" && cargo build --release -p pgherd-agent --bin pgherd-agent)
# The archive hand-off socket that `pgherd-agent run` serves, served alone (see socket-server/src/main.rs).
# Same lock file and target directory as the workspace, so the release dependencies are reused.
if [[ "$PHASES" == *wal* ]] && [ -z "${PGHERD_SOCKET_SERVER_BIN:-}" ] && { [ ! -x "$SOCKSRV" ] || [ "$SOCKSRV" -ot "$AGENT" ]; }; then
  cp "$ROOT/Cargo.lock" "$SOCKSRV_DIR/Cargo.lock"
  CARGO_TARGET_DIR=$ROOT/target cargo build -q --release --manifest-path "$SOCKSRV_DIR/Cargo.toml"
fi

WORK=$(mktemp -d /tmp/pgherd-bench-backup.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
if [ -z "${BENCH_KEEP:-}" ]; then trap cleanup EXIT; fi

# shellcheck source=bench/garage.sh
. "$(dirname "$0")/../garage.sh"
now() { echo "$EPOCHREALTIME"; }
# timed OUT CMD...: runs CMD, writes "wall_seconds cpu_seconds" (CPU of CMD and all its waited-for
# descendants) to OUT; fails when CMD fails.
timed() {
  local out=$1; shift
  python3 - "$out" "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[2:])
w = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{w:.3f} {u.ru_utime + u.ru_stime:.3f}\n")
sys.exit(r.returncode)
PY
}
asp() { runuser -u postgres -- "$@"; }

# --- S3: Garage on loopback, behind stunnel (TLS, self-signed CA); both tools use the HTTPS endpoint ----
start_garage "$WORK/garage" 10G
TLS=$(free_port)

T=$WORK/tls; mkdir -p "$T"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pgherd-bench-ca -keyout "$T/ca.key" -out "$T/ca.crt" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$T/tls.key" -out "$T/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:127.0.0.1,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$T/ext"
openssl x509 -req -in "$T/tls.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial -days 2 -out "$T/tls.crt" \
  -extfile "$T/ext" 2>/dev/null
chmod 644 "$T/ca.crt"
cat >"$T/stunnel.conf" <<EOF
foreground = yes
pid =
[s3]
accept = 127.0.0.1:$TLS
connect = 127.0.0.1:$S3
cert = $T/tls.crt
key = $T/tls.key
EOF
stunnel4 "$T/stunnel.conf" >"$T/stunnel.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$TLS") 2>/dev/null && break; sleep 0.1; done
ENDPOINT=https://127.0.0.1:$TLS
# aws-sdk-s3 (rustls, native roots) reads extra trust anchors from SSL_CERT_FILE (rustls-native-certs).
CAENV="SSL_CERT_FILE=$T/ca.crt"
# (The certificate names 127.0.0.1 both as an IP SAN, which rustls matches, and as a DNS SAN, the only SAN
# type pgBackRest 2.45 matches; it ignores the CN once any SAN exists.)

# --- PostgreSQL 15 ---------------------------------------------------------------------------------------
PGPORT=$(free_port)
chown postgres "$WORK"
asp "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
cat >>"$WORK/data/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$WORK'
wal_level = replica
max_wal_senders = 10
archive_mode = on
archive_command = 'true'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
asp "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null
q() { psql -h "$WORK" -p "$PGPORT" -U postgres -X -qAt -d "${2:-postgres}" -c "$1"; }
set_archive() { # command (no single quotes inside)
  q "ALTER SYSTEM SET archive_command = '$1'" >/dev/null
  q "SELECT pg_reload_conf()" >/dev/null
}
ready_count() { find "$WORK/data/pg_wal/archive_status" -name '*.ready' | wc -l; }
wait_drained() { # with the current command; until nothing is .ready
  for _ in $(seq 3000); do [ "$(ready_count)" = 0 ] && return; sleep 0.1; done
  echo "archiving did not drain" >&2; exit 1
}

# pgherd: a Patroni-style configuration for `backup push`, and one envdir per codec.
cat >"$WORK/patroni.yml" <<EOF
postgresql:
  listen: '*:$PGPORT'
  data_dir: $WORK/data
  bin_dir: $PGBIN
  parameters:
    unix_socket_directories: $WORK
  authentication:
    superuser: {username: postgres}
    replication: {username: postgres}
EOF
envdir() { # codec
  local d=$WORK/env-$1; mkdir -p "$d"
  echo "s3://$BUCKET/pgherd-$1" >"$d/WALG_S3_PREFIX"
  echo "$ENDPOINT" >"$d/AWS_ENDPOINT"
  echo garage >"$d/AWS_REGION"
  echo "$KEY_ID" >"$d/AWS_ACCESS_KEY_ID"
  echo "$SECRET" >"$d/AWS_SECRET_ACCESS_KEY"
  echo true >"$d/AWS_S3_FORCE_PATH_STYLE"
  echo native >"$d/PGHERD_BACKUP_ENGINE"
  echo "$1" >"$d/PGHERD_COMPRESSION"
  chown -R postgres "$d"; chmod 700 "$d"
}
for c in zstd lz4; do envdir "$c"; done
PGHERD=(runuser -u postgres -- env "$CAENV" PGHERD_PATRONI_CONFIG="$WORK/patroni.yml" HOSTNAME=bench "$AGENT")

# pgBackRest: the same endpoint, CA and bucket; zstd level 3 is also pgherd's (async-compression default).
mkdir -p "$WORK"/pgbr/{log,lock,spool}; chown -R postgres "$WORK/pgbr"
cat >"$WORK/pgbr/pgbackrest.conf" <<EOF
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=$BUCKET
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$TLS
repo1-s3-region=garage
repo1-s3-key=$KEY_ID
repo1-s3-key-secret=$SECRET
repo1-s3-uri-style=path
repo1-storage-ca-file=$T/ca.crt
repo1-retention-full=50
start-fast=y
compress-type=zst
compress-level=3
process-max=1
log-path=$WORK/pgbr/log
lock-path=$WORK/pgbr/lock
spool-path=$WORK/pgbr/spool
log-level-console=warn
log-level-file=off
[bench]
pg1-path=$WORK/data
pg1-port=$PGPORT
pg1-socket-path=$WORK
pg1-user=postgres
EOF
chown postgres "$WORK/pgbr/pgbackrest.conf"; chmod 600 "$WORK/pgbr/pgbackrest.conf"
PGBR="pgbackrest --config=$WORK/pgbr/pgbackrest.conf --stanza=bench"
asp $PGBR stanza-create >/dev/null

# --- Data ------------------------------------------------------------------------------------------------
echo "loading pgbench scale $SCALE ..." >&2
q "CREATE DATABASE bench" >/dev/null
q "CREATE DATABASE walgen" >/dev/null
pgbench -h "$WORK" -p "$PGPORT" -U postgres -i -q -s "$SCALE" bench 2>/dev/null
q "VACUUM ANALYZE" bench >/dev/null
q "CHECKPOINT" >/dev/null
wait_drained
DATA_BYTES=$(du -sb --exclude=pg_wal "$WORK/data" | cut -f1)
DATA_MB=$(awk -v b="$DATA_BYTES" 'BEGIN { printf "%.0f", b / 1e6 }')
echo "data directory without pg_wal: $DATA_MB MB" >&2

RESULTS=$WORK/results; : >"$RESULTS"
row() { echo "$*" >>"$RESULTS"; }
mbs() { awk -v b="$DATA_BYTES" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
col() { cut -d' ' -f"$2" "$1"; }
# fsync every file and directory of a tree (coreutils `sync FILE...`): only what the restore wrote, not the
# whole machine's dirty pages as a bare `sync` would (other jobs share this machine).
fsync_tree() { find "$1" -print0 | xargs -0 sync; }
export -f fsync_tree; export WORK
restore_dir() { rm -rf "$WORK/restore"; mkdir -p "$WORK/restore"; chown postgres "$WORK/restore"; chmod 700 "$WORK/restore"; }
check_restored() { # the restored directory has the whole cluster
  local got; got=$(du -sb --exclude=pg_wal "$WORK/restore" | cut -f1)
  awk -v g="$got" -v d="$DATA_BYTES" 'BEGIN { exit !(g > 0.95 * d) }' \
    || { echo "restore incomplete: $got of $DATA_BYTES bytes" >&2; exit 1; }
}

# --- Base backup and restore -----------------------------------------------------------------------------
PGBR_SEEN=0
pgbr_stored() { # bytes of the newest pgBackRest backup in the repository
  asp $PGBR info --output=json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup"][-1]["info"]["repository"]["delta"])'
}
[[ "$PHASES" == *backup* ]] || CODECS=""
for round in $(seq "$REPEAT"); do
for codec in $CODECS; do
  # pgherd
  set_archive true
  restore_dir
  echo "round $round: pgherd backup push ($codec) ..." >&2
  timed "$WORK/t" "${PGHERD[@]}" backup push --envdir "$WORK/env-$codec" --json >"$WORK/manifest.json"
  read -r bw bc <"$WORK/t"
  stored=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stored_bytes"])' "$WORK/manifest.json")
  echo "pgherd restore ($codec) ..." >&2
  timed "$WORK/t" "${PGHERD[@]}" clone-with-wale --envdir "$WORK/env-$codec" --datadir "$WORK/restore" >/dev/null 2>>"$WORK/restore.log"
  read -r rw rc <"$WORK/t"
  timed "$WORK/t" bash -c 'fsync_tree "$WORK/restore"'
  read -r fw _ <"$WORK/t"
  check_restored
  row "backup pgherd-agent|$codec|$bw|$(mbs "$bw")|$bc|$((stored / 1000000))|$rw|$fw|$(mbs "$(awk -v a="$rw" -v b="$fw" 'BEGIN { print a + b }')")|$rc"

  # pgBackRest, process-max 1 (and 2 for zstd)
  pms=1; [ "$codec" = zstd ] && [ "$PM2" = 1 ] && pms="1 2"
  btype=$codec; [ "$codec" = zstd ] && btype=zst
  for pm in $pms; do
    set_archive "$PGBR archive-push %p"
    restore_dir
    echo "round $round: pgbackrest backup ($codec, process-max $pm) ..." >&2
    timed "$WORK/t" runuser -u postgres -- $PGBR --compress-type="$btype" --process-max="$pm" backup --type=full
    read -r bw bc <"$WORK/t"
    stored=$(pgbr_stored)
    echo "pgbackrest restore ($codec, process-max $pm) ..." >&2
    timed "$WORK/t" runuser -u postgres -- $PGBR --process-max="$pm" --pg1-path="$WORK/restore" restore
    read -r rw rc <"$WORK/t"
    timed "$WORK/t" bash -c 'fsync_tree "$WORK/restore"'
    read -r fw _ <"$WORK/t"
    check_restored
    row "backup pgBackRest, process-max $pm|$codec|$bw|$(mbs "$bw")|$bc|$((stored / 1000000))|$rw|$fw|$(mbs "$(awk -v a="$rw" -v b="$fw" 'BEGIN { print a + b }')")|$rc"
  done
done
done
rm -rf "$WORK/restore"

# --- WAL archiving ---------------------------------------------------------------------------------------
if [[ "$PHASES" == *wal* ]]; then
SOCK=$WORK/sock/archive.sock
mkdir -p "$WORK/sock"; chown postgres "$WORK/sock"
SOCK_PID=""
if [ -x "$SOCKSRV" ]; then
  runuser -u postgres -- env "$CAENV" "$SOCKSRV" "$WORK/data" "$SOCK" >"$WORK/socket-server.log" 2>&1 &
  RUNUSER_PID=$!
  for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || { echo "socket server did not start: $(cat "$WORK/socket-server.log")" >&2; exit 1; }
  SOCK_PID=$(pgrep -P "$RUNUSER_PID" | head -1)   # runuser's child (env exec'd the server): its CPU is measured
  [ "$(cat "/proc/$SOCK_PID/comm")" = pgherd-bench-so ] || { echo "socket server pid not found" >&2; exit 1; }
  PIDS+=("$SOCK_PID" "$RUNUSER_PID")
fi
ticks() { awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12] + f[13], f[14] + f[15] }' "/proc/$1/stat"; } # self, children
TCK=$(getconf CLK_TCK)
# S3 requests Garage served so far: "PUTs (PutObject + UploadPart) all".
s3_requests() {
  curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^api_s3_request_counter/ {
    t += $NF; if ($0 ~ /"(PutObject|UploadPart)"/) p += $NF } END { print p + 0, t + 0 }'
}
archiver_pid() { q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'"; }

WALENV=$WORK/env-zstd
declare -A CMD=(
  ["pgherd-agent wal-push (one process per segment)"]="$CAENV $AGENT wal-push --envdir $WALENV %p"
  ["pgherd-agent wal-push via the agent socket (4 look-ahead)"]="PGHERD_SOCKET=$SOCK $CAENV $AGENT wal-push --envdir $WALENV %p"
  ["pgBackRest archive-push (sync)"]="$PGBR archive-push %p"
  ["pgBackRest archive-push (async, process-max 4)"]="$PGBR --archive-async --process-max=4 archive-push %p"
)
ORDER=("pgherd-agent wal-push (one process per segment)" "pgBackRest archive-push (sync)"
  "pgherd-agent wal-push via the agent socket (4 look-ahead)" "pgBackRest archive-push (async, process-max 4)")

drain() { # name load(0|1)
  local name=$1 load=$2 last k t0 t1 a0 a1 f0 f1 n0 n1 p0 p1 r0 r1 x0 x1 s0 s1 pid pg=""
  set_archive true; wait_drained
  set_archive ""
  q "SELECT pg_switch_wal()" >/dev/null; sleep 0.5
  pgbench -h "$WORK" -p "$PGPORT" -U postgres -i -q -I dtg -s "$WAL_SCALE" walgen 2>/dev/null
  q "SELECT pg_switch_wal()" >/dev/null
  sleep 0.5
  last=$(find "$WORK/data/pg_wal/archive_status" -name '*.ready' -printf '%f\n' | sed 's/\.ready$//' | sort | tail -1)
  k=$(ready_count)
  if [ "$load" = 1 ]; then
    pgbench -h "$WORK" -p "$PGPORT" -U postgres -n -c 2 -j 2 -T 900 bench >"$WORK/pgbench.log" 2>&1 &
    pg=$!
    sleep 2
  fi
  pid=$(archiver_pid)
  read -r _ a0 < <(ticks "$pid")
  s0=0; [ -n "$SOCK_PID" ] && read -r s0 _ < <(ticks "$SOCK_PID")
  x0=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
  read -r f0 n0 < <(q "SELECT failed_count, archived_count FROM pg_stat_archiver" | tr '|' ' ')
  read -r p0 r0 < <(s3_requests)
  t0=$(now)
  set_archive "${CMD[$name]}"
  until [ "$(q "SELECT coalesce(last_archived_wal, '') COLLATE \"C\" >= '$last' FROM pg_stat_archiver")" = t ]; do
    sleep 0.05
    awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 600) }' && { echo "$name: drain timed out" >&2; exit 1; }
  done
  t1=$(now)
  read -r _ a1 < <(ticks "$pid")
  s1=0; [ -n "$SOCK_PID" ] && read -r s1 _ < <(ticks "$SOCK_PID")
  x1=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
  read -r f1 n1 < <(q "SELECT failed_count, archived_count FROM pg_stat_archiver" | tr '|' ' ')
  read -r p1 r1 < <(s3_requests)
  if [ -n "$pg" ]; then kill "$pg" 2>/dev/null; wait "$pg" 2>/dev/null || true; fi
  local secs cpu tps
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  cpu=$(awk -v a=$((a1 - a0)) -v s=$((s1 - s0)) -v t="$TCK" -v n="$name" 'BEGIN {
    if (n ~ /async/) { print "n/a" } else if (n ~ /socket/) { printf "%.1f", (a + s) / t } else { printf "%.1f", a / t } }')
  tps=$(awk -v x=$((x1 - x0)) -v s="$secs" -v l="$load" 'BEGIN { if (l == 1) printf "%.0f", x / s; else print "-" }')
  row "wal $name|$([ "$load" = 1 ] && echo "under pgbench -c 2" || echo idle)|$k|$secs|$(awk -v k="$k" -v s="$secs" 'BEGIN { printf "%.2f", k / s }')|$cpu|$tps|$((f1 - f0))|$(awk -v p=$((p1 - p0)) -v r=$((r1 - r0)) -v n=$((n1 - n0)) 'BEGIN { printf "%.2f / %.2f", p / n, r / n }')"
}
for load in 0 1; do
  for name in "${ORDER[@]}"; do
    [[ "$name" == *socket* ]] && [ -z "$SOCK_PID" ] && continue
    echo "archiving: $name, load $load ..." >&2
    SOCK_PID_SAVE=$SOCK_PID; [[ "$name" == *socket* ]] || SOCK_PID=""
    drain "$name" "$load"
    SOCK_PID=$SOCK_PID_SAVE
  done
done
set_archive true
fi

# --- Report ----------------------------------------------------------------------------------------------
echo
echo "PostgreSQL $(q 'SHOW server_version' | cut -d' ' -f1), pgbench scale $SCALE ($DATA_MB MB data directory without pg_wal), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%F)."
echo "$("$AGENT" --version); $(pgbackrest version); Garage $("$GARAGE" --version 2>&1 | head -1 | awk '{print $2}' | sed 's/^cargo://') behind $(stunnel4 -version 2>&1 | grep -o 'stunnel [0-9.]*' | head -1) (TLS)."
echo
echo "Base backups: median of $REPEAT interleaved rounds (range of backup and restore MB/s in brackets)."
echo
echo "| Base backup | codec | backup s | backup MB/s | backup CPU s | stored MB | restore s | + fsync s | restore MB/s (incl. fsync) | restore CPU s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
{ grep '^backup ' "$RESULTS" || true; } | sed 's/^backup //' | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    f = line.rstrip("\n").split("|")
    rows.setdefault((f[0], f[1]), []).append([float(x) for x in f[2:]])
for (tool, codec), rs in rows.items():
    m = [statistics.median(c) for c in zip(*rs)]
    rng = lambda i: "[%.0f–%.0f]" % (min(r[i] for r in rs), max(r[i] for r in rs)) if len(rs) > 1 else ""
    print(f"| {tool} | {codec} | {m[0]:.1f} | {m[1]:.0f} {rng(1)} | {m[2]:.1f} | {m[3]:.0f} | {m[4]:.1f} | {m[5]:.1f} | {m[6]:.0f} {rng(6)} | {m[7]:.1f} |")
'
echo
echo "| WAL archiving (zstd) | load | segments | drain s | segments/s | archive CPU s | bench TPS | failures | S3 PUTs / all requests per segment |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
{ grep '^wal ' "$RESULTS" || true; } | sed 's/^wal //' | awk -F'|' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
