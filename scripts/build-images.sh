#!/usr/bin/env bash
# Builds pgherd's container images with the local podman (rootful), for the demo, the tests and CI:
#   localhost/pgherd-postgres:<version>      images/postgres/Dockerfile (agent as PID 1, Patroni, PostgreSQL)
#   localhost/pgherd-coordinator:<version>   images/coordinator/Dockerfile
# No container registry is reachable here, so the base image debian:bookworm-slim is made with mmdebstrap from
# Debian's mirror once, cached as a tarball in $PGHERD_CACHE (like Garage in install-deps.sh), and imported
# under its Docker Hub name: the Dockerfiles keep an unmodified `FROM debian:bookworm-slim`.
# Idempotent: an image is rebuilt only when its inputs changed (Dockerfile, context files, the binary, build
# arguments, the base image), recorded in the label io.pgherd.inputs.
#
# Usage: scripts/build-images.sh [base|postgres|coordinator]...   (default: all three)
# Env:   PGHERD_CACHE (~/.cache/pgherd), PGVERSIONS ("15"), PGDG (false), CONTAINERS_CONF (.config/containers.conf),
#        PGHERD_IMAGE_PROFILE (release): `debug` puts the debug binaries the test suite already built into
#        the images, tagged :dev instead of :<version>, so CI does not compile everything a second time with
#        optimisations (about 25 minutes on 2 cores); the release images are what users deploy and what
#        BENCHMARKS.md measures.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${PGHERD_CACHE:-$HOME/.cache/pgherd}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/.config/containers.conf}
base=docker.io/library/debian:bookworm-slim
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
target=${CARGO_TARGET_DIR:-$repo/target}
profile=${PGHERD_IMAGE_PROFILE:-release}
case $profile in release | debug) ;; *) echo "PGHERD_IMAGE_PROFILE must be release or debug" >&2; exit 2 ;; esac
# The machine is shared with timing-sensitive tests: everything heavy runs at the lowest priority.
heavy=(nice -n 19 ionice -c3)

log() { printf '[build-images] %s\n' "$*" >&2; }
now() { date +%s; }

# Debian's rootful podman with runc (see .config/containers.conf), netavark/aardvark-dns for networks whose
# containers find each other by name, mmdebstrap for the base image, and iproute2 for the container tests,
# which fix each network bridge's MAC address (tests/src/podman.rs, Network::pin_bridge_address).
# shellcheck source=scripts/apt.sh
. "$repo/scripts/apt.sh"
apt_ensure podman runc netavark aardvark-dns iptables mmdebstrap iproute2

build_base() {
  if podman image exists "$base"; then return; fi
  local tarball=$cache/debian-bookworm-slim.tar t0
  t0=$(now)
  if [ ! -s "$tarball" ]; then
    command -v mmdebstrap >/dev/null || { log "mmdebstrap missing: apt-get install mmdebstrap"; exit 1; }
    log "mmdebstrap bookworm -> $tarball"
    mkdir -p "$cache"
    # The dpkg path filters and apt settings are those of Docker's official slim image; they stay in the
    # image (dpkg.cfg.d, apt.conf.d), so packages installed later drop their docs and man pages too.
    # shellcheck disable=SC2016 # "$1" in the hook is the chroot, expanded by mmdebstrap's hook shell
    "${heavy[@]}" mmdebstrap --variant=minbase --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --aptopt='Acquire::Languages "none"' --aptopt='Apt::AutoRemove::SuggestsImportant "false"' \
      --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""' \
      --aptopt='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; }' \
      --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/etc/resolv.conf "$1"/etc/hostname; rm -rf "$1"/var/lib/apt/lists/*' \
      bookworm "$tarball.tmp" \
      'deb http://deb.debian.org/debian bookworm main' \
      'deb http://deb.debian.org/debian bookworm-updates main' \
      'deb http://deb.debian.org/debian-security bookworm-security main' \
      >"$cache/mmdebstrap.log" 2>&1 || { tail -n 30 "$cache/mmdebstrap.log" >&2; exit 1; }
    mv "$tarball.tmp" "$tarball"
  fi
  log "podman import $tarball as $base"
  podman import -q --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tarball" "$base" >/dev/null
  log "base image ready in $(($(now) - t0)) s"
}

binaries() {
  # Debug: exactly the test suite's build (`--workspace`: selecting packages would unify features
  # differently and recompile the dependencies).
  local args=(--bins --workspace)
  [ "$profile" = debug ] || args=(--release --bins -p pgherd-agent -p pgherd-coordinator)
  log "cargo build ${args[*]}"
  (cd "$repo" && "${heavy[@]}" cargo build "${args[@]}")
}

# build_image NAME BINARY [--build-arg K=V]...: builds localhost/NAME from images/<short name>/ plus the
# binary, in a temporary context so that target/ (gigabytes) is never sent to the builder.
build_image() {
  local name=$1 binary=$2; shift 2
  local dir=$repo/images/${name#pgherd-} inputs have t0
  ctx=$(mktemp -d)
  cp -a "$dir/." "$ctx/"
  cp "$target/$profile/$binary" "$ctx/$binary"
  # Debug information is most of a debug binary (400 MB of 455); symbols stay for backtraces.
  strip --strip-debug "$ctx/$binary"
  inputs=$( (cd "$ctx" && find . -type f -printf '%m %p\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum
            printf '%s\n' "$@" "$(podman image inspect --format '{{.Id}}' "$base")") | sha256sum | cut -c1-16)
  # :<version> is the release build users deploy; :dev is the test suite's debug build.
  local tags=("localhost/$name:$version")
  [ "$profile" = release ] || tags=("localhost/$name:dev")
  have=$(podman image inspect --format '{{index .Labels "io.pgherd.inputs"}}' "${tags[0]}" 2>/dev/null || true)
  if [ "$have" = "$inputs" ]; then
    log "${tags[0]} is up to date (inputs $inputs)"
  else
    log "building ${tags[*]} ($profile binary, inputs $inputs)"
    t0=$(now)
    # The host's CA bundle is lent to the build as a secret (never stored in a layer) so that pip works behind
    # a TLS-inspecting proxy; --pull=never keeps the build offline apart from the package mirrors.
    "${heavy[@]}" podman build --pull=never --layers --format docker "$@" \
      --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt \
      --label "io.pgherd.inputs=$inputs" --label "org.opencontainers.image.version=$version" \
      --label "io.pgherd.profile=$profile" "${tags[@]/#/--tag=}" "$ctx"
    log "built ${tags[0]} in $(($(now) - t0)) s"
  fi
  rm -rf "$ctx"
}
ctx=
trap 'rm -rf "${ctx:-/nonexistent}"' EXIT

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(base postgres coordinator)
for step in "${steps[@]}"; do
  case $step in
    base) build_base ;;
    postgres | coordinator) ;;
    *) log "unknown step $step (base, postgres, coordinator)"; exit 2 ;;
  esac
done
if [[ " ${steps[*]} " == *" postgres "* || " ${steps[*]} " == *" coordinator "* ]]; then
  build_base
  binaries
fi
for step in "${steps[@]}"; do
  case $step in
    postgres) build_image pgherd-postgres pgherd-agent \
      --build-arg "PGVERSIONS=${PGVERSIONS:-15}" --build-arg "PGDG=${PGDG:-false}" ;;
    coordinator) build_image pgherd-coordinator pgherd-coordinator ;;
  esac
done
podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '/(pgherd-[a-z]+|debian):' >&2 || true
