#!/usr/bin/env bash
# Installs everything the demo and the test suite need on a fresh Debian 12 machine, idempotently:
#   - Debian packages: PostgreSQL 15 (server + contrib), etcd, rsync, pgbench (in postgresql-contrib)
#   - a project-local Python venv (.venv) with Patroni 4.x, psycopg2 and the pgserver wheel (PostgreSQL 16
#     binaries including pg_upgrade), plus .venv-patroni3 with Patroni 3.x for the compatibility test
#   - Garage (S3 server), built once with `cargo install garage --locked` and cached in ~/.cache/pgherd
# Re-running it only checks; it installs what is missing. Prints the paths it settled on.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${PGHERD_CACHE:-$HOME/.cache/pgherd}
garage_version=2.5.0

log() { printf '[install-deps] %s\n' "$*" >&2; }

# shellcheck source=scripts/apt.sh
. "$repo/scripts/apt.sh"
apt_ensure postgresql-15 postgresql-contrib etcd-server etcd-client rsync python3 python3-venv
# Debian's etcd package may start a system etcd on 2379; tests run their own on random ports.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi

# Patroni runs as the postgres user, so its interpreter must be one that user can execute: Debian's
# /usr/bin/python3, not a per-user build such as pyenv's under a 0700 home directory.
py=/usr/bin/python3
make_venv() { # dir, pip requirement...
  local dir=$1; shift
  if [ -e "$dir" ] && [ "$(readlink -f "$dir/bin/python3")" != "$(readlink -f "$py")" ]; then
    log "recreating $dir with $py"
    rm -rf "$dir"
  fi
  if [ ! -x "$dir/bin/python3" ]; then
    log "creating venv $dir"
    "$py" -m venv "$dir"
  fi
  if ! "$dir/bin/python3" -m pip install -q --disable-pip-version-check "$@" >"$dir.install.log" 2>&1; then
    cat "$dir.install.log" >&2
    exit 1
  fi
}
marker_ok() { [ -f "$1/.pgherd-installed" ] && [ "$(cat "$1/.pgherd-installed")" = "$2" ] && [ "$(readlink -f "$1/bin/python3")" = "$(readlink -f "$py")" ]; }

reqs4="patroni[etcd,etcd3]>=4.0,<5 psycopg2-binary>=2.9 pgserver==0.1.4 PyYAML>=6"
if ! marker_ok "$repo/.venv" "$reqs4"; then
  # shellcheck disable=SC2086
  make_venv "$repo/.venv" $reqs4
  echo "$reqs4" >"$repo/.venv/.pgherd-installed"
fi
reqs3="patroni[etcd,etcd3]>=3.3,<4 psycopg2-binary>=2.9"
if ! marker_ok "$repo/.venv-patroni3" "$reqs3"; then
  # shellcheck disable=SC2086
  make_venv "$repo/.venv-patroni3" $reqs3
  echo "$reqs3" >"$repo/.venv-patroni3/.pgherd-installed"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo install cargo-nextest"
  cargo install cargo-nextest --locked >/dev/null 2>&1
fi

garage_bin="$cache/garage-$garage_version/bin/garage"
if [ ! -x "$garage_bin" ]; then
  log "building Garage $garage_version (once per machine; takes a while)"
  mkdir -p "$cache"
  cargo install garage --version "$garage_version" --locked --root "$cache/garage-$garage_version" >"$cache/garage-build.log" 2>&1 \
    || { tail -n 50 "$cache/garage-build.log" >&2; exit 1; }
fi
ln -sfn "$garage_bin" "$cache/garage"

log "postgres 15: /usr/lib/postgresql/15/bin"
log "postgres 16: $("$repo/.venv/bin/python3" -c 'import pgserver,os;print(os.path.join(os.path.dirname(pgserver.__file__),"pginstall","bin"))')"
log "patroni: $("$repo/.venv/bin/patroni" --version 2>&1)"
log "garage: $garage_bin"
