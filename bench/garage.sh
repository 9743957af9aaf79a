# shellcheck shell=bash
# Sourced by the benchmarks that need S3: one Garage node on loopback, plain HTTP on $S3, with bucket
# $BUCKET (bench) writable by the key $KEY_ID / $SECRET.
# Needs $GARAGE (the binary) and the caller's PIDS array (the server's pid is appended, for cleanup).
# Usage: start_garage DIR CAPACITY (e.g. 20G); `gcli` then runs Garage's CLI against it.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

gcli() { "$GARAGE" -c "$G/garage.toml" "$@"; }

start_garage() {
  G=$1
  mkdir -p "$G"
  RPC=$(free_port); S3=$(free_port); ADMIN=$(free_port)
  (umask 077; cat >"$G/garage.toml" <<EOF
metadata_dir = "$G/meta"
data_dir = "$G/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC"
rpc_public_addr = "127.0.0.1:$RPC"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN"
admin_token = "$(openssl rand -hex 16)"
EOF
  )
  RUST_LOG=warn "$GARAGE" -c "$G/garage.toml" server >"$G/garage.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 150); do gcli status >/dev/null 2>&1 && break; sleep 0.2; done
  gcli layout assign -z dc1 -c "$2" "$(gcli node id -q | cut -d@ -f1)" >/dev/null
  gcli layout apply --version 1 >/dev/null
  BUCKET=bench
  KEY_ID=GK$(openssl rand -hex 12); SECRET=$(openssl rand -hex 32)
  gcli bucket create "$BUCKET" >/dev/null
  gcli key import --yes -n bench "$KEY_ID" "$SECRET" >/dev/null
  gcli bucket allow --read --write --owner "$BUCKET" --key bench >/dev/null
}
