#!/usr/bin/env bash
# install-helm.sh — builds (once) the `helm` CLI the chart tests use (tests/e2e/rbac.rs), from the Go
# module proxy, into a cache outside the repo keyed by version. Called by build.sh; also safe on its own.
#
# Owns:
#   $CACHE/helm-<v>/helm     go install helm.sh/helm/v3/cmd/helm@<v> (GOTOOLCHAIN=local)
#   $CACHE/logs/helm.log     the last build log
# CACHE is $PHOENIX_E2E_CACHE, default ~/.cache/phoenix-e2e. Bumping HELM_VERSION builds into a new
# directory; an existing binary is reused.
#
# Usage: tests/e2e/install-helm.sh
# Progress (and the build time) goes to stderr; stdout gets one line HELM_BIN=<path>.
set -euo pipefail

HELM_VERSION=v3.22.0
CACHE=${PHOENIX_E2E_CACHE:-$HOME/.cache/phoenix-e2e}
HELM_DIR=$CACHE/helm-$HELM_VERSION
HELM_BIN=$HELM_DIR/helm
export GOTOOLCHAIN=local

die() { echo "install-helm.sh: error: $*" >&2; exit 1; }
log() { echo "install-helm.sh: $*" >&2; }

if [[ -x $HELM_BIN ]]; then
  log "helm $HELM_VERSION: cached ($HELM_BIN)"
else
  command -v go >/dev/null || die "'go' is not on PATH; helm is built with 'go install' (GOTOOLCHAIN=local)"
  mkdir -p "$CACHE/logs"
  # Its own lock, not build.sh's: build.sh holds .build.lock while it calls this script.
  exec 8>"$CACHE/.helm.lock"
  flock 8 || die "cannot lock $CACHE/.helm.lock"
  if [[ -x $HELM_BIN ]]; then
    log "helm $HELM_VERSION: built meanwhile by another caller ($HELM_BIN)"
  else
    logf=$CACHE/logs/helm.log
    : >"$logf"
    log "helm $HELM_VERSION: building (log: $logf)"
    start=$SECONDS
    rm -rf "$HELM_DIR.partial"; mkdir -p "$HELM_DIR.partial"
    # As helm's Makefile does: stamp the version, and the Kubernetes version `helm template` and
    # `helm lint` assume (from the client-go it builds with; the default would be v1.20).
    gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>>"$logf" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') \
      || die "cannot download helm.sh/helm/v3@$HELM_VERSION; log: $logf"
    client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
    k8s_minor=${client_go#v0.}; k8s_minor=${k8s_minor%%.*}
    [[ $k8s_minor =~ ^[0-9]+$ ]] || die "cannot read the k8s.io/client-go version from $gomod"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in pkg/lint/rules pkg/chartutil; do
      ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
    done
    if ! GOBIN=$HELM_DIR.partial CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >>"$logf" 2>&1; then
      echo "install-helm.sh: error: building helm failed; full log: $logf" >&2
      tail -n 30 "$logf" | sed 's/^/    /' >&2
      exit 1
    fi
    mkdir -p "$HELM_DIR"
    mv -f "$HELM_DIR.partial/helm" "$HELM_BIN"
    rmdir "$HELM_DIR.partial"
    log "helm $HELM_VERSION: built in $((SECONDS - start))s"
  fi
fi
echo "HELM_BIN=$HELM_BIN"
