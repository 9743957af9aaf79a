# shellcheck shell=bash
# Sourced by the install scripts: `apt_ensure PKG…` installs the Debian packages that are missing (and
# touches apt only then, so a machine that has everything stays offline). Needs a `log` function.
apt_ensure() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
