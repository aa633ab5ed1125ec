# need.sh — sourced by the build scripts: `need CMD PKG` makes a Debian package's command available,
# installing the package when missing (as the e2e build installs its tools), and fails with a clear
# message where apt-get cannot run. The sourcing script defines log().

die() { log "error: $*"; exit 1; }

need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 \
    || die "$cmd not found and apt-get is not usable here: install the $pkg package"
  log "installing $pkg (apt-get)"
  apt-get install -y --no-install-recommends "$pkg" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "$pkg" >/dev/null 2>&1; } \
    || die "apt-get install $pkg failed"
}
