#!/usr/bin/env bash
# build.sh — builds (once) every binary the local control plane needs, into a cache outside the repo
# keyed by version, and installs the two system tools it takes from Debian.
#
# Owns:
#   $CACHE/k8s-<v>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,etcd}
#                                   from tests/e2e/cluster (k8s.io/kubernetes + go.etcd.io/etcd)
#   $CACHE/kwok-<v>/bin/kwok        from tests/e2e/kwok (sigs.k8s.io/kwok)
#   $CACHE/kwok-<v>/stages/*.yaml   kwok Stage files copied from that module (used by cluster.sh)
#   $CACHE/builder-<v>/builder      the OpenTelemetry collector builder (go install)
#   $CACHE/otelcol-<v>/otelcol-phoenix  built by the builder from tests/e2e/otelcol/manifest.yaml
#   $CACHE/logs/<component>.log     the last build log of each component
#   prometheus, openssl, chromium   apt-get installed when missing from PATH (chromium: the HTML
#                                   report's test, tests/e2e/cli.rs)
# CACHE is $PHOENIX_E2E_CACHE, default ~/.cache/phoenix-e2e. Versions are read from the pinned files
# (go.mod, manifest.yaml), so bumping a pin builds into a new cache directory.
#
# Usage: tests/e2e/build.sh [k8s|kwok|otelcol|prometheus|openssl|chromium]...   (default: all of them)
# Progress goes to stderr; stdout gets the resulting paths as KEY=value lines (K8S_BIN_DIR, KWOK_BIN,
# KWOK_STAGES_DIR, COLLECTOR_BIN), which cluster.sh reads. A component whose binaries exist is skipped. Builds run with GOTOOLCHAIN=local, one at a time
# (a lock serialises concurrent callers).
set -euo pipefail

E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PHOENIX_E2E_CACHE:-$HOME/.cache/phoenix-e2e}
export GOTOOLCHAIN=local

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

# Version of a module required by a go.mod (first match).
gomod_version() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"; }

K8S_VERSION=$(gomod_version "$E2E/cluster/go.mod" k8s.io/kubernetes)
KWOK_VERSION=$(gomod_version "$E2E/kwok/go.mod" sigs.k8s.io/kwok)
OTELCOL_VERSION=v$(sed -n 's/^  version: *//p' "$E2E/otelcol/manifest.yaml" | head -n1)
BUILDER_VERSION=$OTELCOL_VERSION
[[ -n $K8S_VERSION && -n $KWOK_VERSION && $OTELCOL_VERSION != v ]] \
  || die "could not read the pinned versions from tests/e2e/{cluster,kwok}/go.mod and otelcol/manifest.yaml"

K8S_DIR=$CACHE/k8s-$K8S_VERSION
KWOK_DIR=$CACHE/kwok-$KWOK_VERSION
BUILDER=$CACHE/builder-$BUILDER_VERSION/builder
# Keyed on the manifest's content too: a component added at the same version builds anew.
OTELCOL_DIR=$CACHE/otelcol-$OTELCOL_VERSION-$(sha256sum "$E2E/otelcol/manifest.yaml" | cut -c1-8)
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)
# kwok Stages (kustomize/stage in the kwok module): nodes become Ready and keep a heartbeat via their
# Lease, pods become Running and Ready, Job-owned pods then Succeed, deleted pods go away.
KWOK_STAGES=(node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease
             pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete)

need_go() {
  command -v go >/dev/null \
    || die "'go' is not on PATH. Install Go >= $(sed -n 's/^go //p' "$E2E/cluster/go.mod") (https://go.dev/doc/install, e.g. unpack the release tarball into /usr/local/go and add /usr/local/go/bin to PATH); builds use GOTOOLCHAIN=local, so the installed Go must be new enough."
}

# run_logged COMPONENT CMD... : runs CMD with output to $CACHE/logs/COMPONENT.log; on failure names
# the component, the log and its tail.
run_logged() {
  local component=$1; shift
  local logf=$CACHE/logs/$component.log
  mkdir -p "$CACHE/logs"
  if ! "$@" >"$logf" 2>&1; then
    echo "build.sh: error: building $component failed; full log: $logf" >&2
    tail -n 30 "$logf" | sed 's/^/    /' >&2
    exit 1
  fi
}

# timed COMPONENT FUNC : runs FUNC and prints how long it took.
timed() {
  local start=$SECONDS
  need_go
  log "$1: building (log: $CACHE/logs/$1.log)"
  "$2"
  log "$1: built in $((SECONDS - start))s"
}

all_exist() { local f; for f in "$@"; do [[ -x $f ]] || return 1; done; }

build_k8s() {
  local stage=$K8S_DIR/bin.partial
  rm -rf "$stage"; mkdir -p "$stage"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$E2E/cluster" && run_logged k8s go build -trimpath -ldflags "$ldflags" -o "$stage/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./etcd)
  mkdir -p "$K8S_DIR/bin"
  local b; for b in "${K8S_BINS[@]}"; do mv -f "$stage/$b" "$K8S_DIR/bin/$b"; done
  rmdir "$stage"
}

build_kwok() {
  mkdir -p "$KWOK_DIR/bin" "$KWOK_DIR/stages"
  (cd "$E2E/kwok" && run_logged kwok go build -trimpath -ldflags "-s -w" -o "$KWOK_DIR/bin/kwok.partial" sigs.k8s.io/kwok/cmd/kwok)
  mv -f "$KWOK_DIR/bin/kwok.partial" "$KWOK_DIR/bin/kwok"
}

copy_kwok_stages() {
  local moddir s
  moddir=$(cd "$E2E/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok) \
    || die "kwok: cannot locate the sigs.k8s.io/kwok module (go mod download in tests/e2e/kwok)"
  mkdir -p "$KWOK_DIR/stages"
  for s in "${KWOK_STAGES[@]}"; do
    [[ -f $moddir/kustomize/stage/$s.yaml ]] || die "kwok: stage file kustomize/stage/$s.yaml not found in $moddir"
    install -m 0644 "$moddir/kustomize/stage/$s.yaml" "$KWOK_DIR/stages/$(basename "$s").yaml"
  done
}

build_otelcol() {
  if [[ ! -x $BUILDER ]]; then
    log "otelcol: installing the collector builder $BUILDER_VERSION"
    GOBIN=$(dirname "$BUILDER") run_logged otelcol-builder go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
  fi
  # The builder writes generated sources and the binary into dist.output_path: point it into the cache.
  mkdir -p "$OTELCOL_DIR"
  sed "s#^  output_path: .*#  output_path: $OTELCOL_DIR/src#" "$E2E/otelcol/manifest.yaml" > "$OTELCOL_DIR/manifest.yaml"
  grep -q "output_path: $OTELCOL_DIR/src" "$OTELCOL_DIR/manifest.yaml" || die "otelcol: manifest has no dist.output_path line to redirect"
  run_logged otelcol "$BUILDER" --config "$OTELCOL_DIR/manifest.yaml" --ldflags "-s -w"
  mv -f "$OTELCOL_DIR/src/otelcol-phoenix" "$OTELCOL_DIR/otelcol-phoenix"
}

apt_install() {
  local pkg=$1
  [[ $(id -u) == 0 ]] || die "$pkg is not on PATH and we are not root: install it with 'sudo apt-get install $pkg'"
  command -v apt-get >/dev/null || die "$pkg is not on PATH and there is no apt-get: install $pkg by hand"
  mkdir -p "$CACHE/logs"
  local logf=$CACHE/logs/$pkg.log
  log "$pkg: installing with apt-get (log: $logf)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$logf" 2>&1 || { tail -n 20 "$logf" >&2; die "apt-get update failed; log: $logf"; }
  # The Debian prometheus package's postinst may try to start its own service; where there is no
  # init system that can fail. Our cluster runs its own instance on its own port, so a failed
  # postinst is only fatal if it left no binary behind.
  if ! apt-get install -y -qq --no-install-recommends "$pkg" >>"$logf" 2>&1; then
    dpkg --configure -a >>"$logf" 2>&1 || true
    command -v "$pkg" >/dev/null || { tail -n 20 "$logf" >&2; die "apt-get install $pkg failed; log: $logf"; }
    log "$pkg: apt-get reported an error (probably its service could not start) but the binary is installed"
  fi
}

component() {
  case $1 in
    k8s)
      local bins=("${K8S_BINS[@]/#/$K8S_DIR/bin/}")
      if all_exist "${bins[@]}"; then log "k8s $K8S_VERSION: cached ($K8S_DIR/bin)"; else timed k8s build_k8s; fi ;;
    kwok)
      if all_exist "$KWOK_DIR/bin/kwok"; then log "kwok $KWOK_VERSION: cached ($KWOK_DIR/bin)"; else timed kwok build_kwok; fi
      local s; for s in "${KWOK_STAGES[@]}"; do
        [[ -f $KWOK_DIR/stages/$(basename "$s").yaml ]] || { need_go; copy_kwok_stages; break; }
      done ;;
    otelcol)
      if all_exist "$OTELCOL_DIR/otelcol-phoenix"; then log "otelcol $OTELCOL_VERSION: cached ($OTELCOL_DIR)"; else timed otelcol build_otelcol; fi ;;
    prometheus|openssl|chromium)
      if command -v "$1" >/dev/null; then log "$1: $(command -v "$1")"; else
        local start=$SECONDS; apt_install "$1"; log "$1: installed in $((SECONDS - start))s"; fi ;;
    *) die "unknown component '$1' (expected k8s, kwok, otelcol, prometheus, openssl, chromium)" ;;
  esac
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9 || die "cannot lock $CACHE/.build.lock"

(( $# )) || set -- openssl prometheus chromium k8s kwok otelcol
for c in "$@"; do component "$c"; done
"$E2E/install-helm.sh" # helm for the chart tests (tests/e2e/rbac.rs); prints HELM_BIN=
echo "K8S_BIN_DIR=$K8S_DIR/bin"
echo "KWOK_BIN=$KWOK_DIR/bin/kwok"
echo "KWOK_STAGES_DIR=$KWOK_DIR/stages"
echo "COLLECTOR_BIN=$OTELCOL_DIR/otelcol-phoenix"
