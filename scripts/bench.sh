#!/usr/bin/env bash
# bench.sh — `just bench`: Phoenix's benchmarks on this machine, printed as a table of measured
# figures next to their targets (benches/phoenix.rs; docs/benchmarks.md explains them).
#
# Builds the release binaries (phoenix-operator, phoenix-simulator), starts a local control plane
# of its own (tests/e2e/cluster.sh) in a private directory, runs `cargo bench --bench phoenix`
# against it, and tears the cluster down at the end, also on failure or Ctrl-C. The report is
# printed and written to $PHOENIX_BENCH_OUT/report.md (default target/bench/report.md), with the
# operator and collector logs beside it.
#
# Sizes (environment; defaults fit a 2-core machine in about 20 minutes):
#   PHOENIX_BENCH_PARTS=reduction,control-plane,peer   parts to run
#   PHOENIX_BENCH_APPLY=200                 Experiments applied one after another (apply → objects)
#   PHOENIX_BENCH_EXPERIMENTS=500           concurrent Experiments with pods (scale, steady state,
#                                           restart); a list (500,1000) adds them step by step
#   PHOENIX_BENCH_SCALE_SIMULATION=1        0: scale Experiments without a Simulation (no Jobs)
#   PHOENIX_BENCH_CONCURRENCY=8             creates in flight during a burst
#   PHOENIX_BENCH_RUNNING_TIMEOUT_SECS=600  longest wait for every scale Experiment to be Running
#   PHOENIX_BENCH_PODS_STEADY_SECS=60       steady-state window after the scale step with pods
#   PHOENIX_BENCH_OBJECTS=1000,2000         scale without pods: Experiments whose targets match no
#                                           node, added step by step ("" skips the part)
#   PHOENIX_BENCH_OBJECTS_SIMULATION=0      1: those Experiments carry a Simulation (+ Job)
#   PHOENIX_BENCH_OBJECTS_TIMEOUT_SECS=600  longest wait for a step's objects
#   PHOENIX_BENCH_STEADY_SECS=600           steady-state window without pods (writes, RSS)
#   PHOENIX_BENCH_ANALYSIS=100              analysis cost: Experiments ending together (0 skips)
#   PHOENIX_BENCH_ANALYSIS_DURATION_SECS=60 … their run length
#   PHOENIX_BENCH_OPERATOR_BIN=…            operator binary (default: the static one the image
#                                           ships, scripts/static-bins.sh; dev runs may use
#                                           target/debug/phoenix-operator)
#   PHOENIX_BENCH_PROFILES=high-cardinality,realistic,high-churn,spike
#   PHOENIX_BENCH_PROCESSES=300             simulated processes per profile
#   PHOENIX_BENCH_SIMULATOR_MILLICORES=400  the simulator's total CPU cap
#   PHOENIX_BENCH_WARMUP_SECS=15            baseline-only time before the top K are chosen
#   PHOENIX_BENCH_REDUCTION_SECS=40         measured window per profile
#   PHOENIX_BENCH_TOPK=10                   K of the topk template
#   PHOENIX_BENCH_PEER_COLLECTORS=250       OpenTelemetryCollectors of the peer's scale test
#   PHOENIX_BENCH_PEER_APPLY=50             … applied one after another (apply → DaemonSet)
#   PHOENIX_BENCH_PEER_BUILD=1              0: never build the peer (uses it only when cached)
#   PHOENIX_BENCH_MAX_CONTROL_PLANE_MIB=6144, PHOENIX_BENCH_MIN_AVAILABLE_MIB=4096
#                                           the scale test stops (and says so) past these
#
# The peer (OpenTelemetry Operator, benches/peer/go.mod) is built once from the Go module proxy
# into $PHOENIX_E2E_CACHE/otel-operator-<version>/ (about 15 minutes the first time on 2 cores,
# seconds afterwards); when it cannot be built the table says "peer: not measured" and why.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT=${PHOENIX_BENCH_OUT:-$REPO/target/bench}
DIR=$OUT/cluster-$$

log() { echo "bench.sh: $*" >&2; }

mkdir -p "$OUT"
paths=$(tests/e2e/build.sh)
KWOK_BIN=$(sed -n 's/^KWOK_BIN=//p' <<<"$paths")
export KWOK_BIN

# The peer: cached by version; built only when missing.
CACHE=${PHOENIX_E2E_CACHE:-$HOME/.cache/phoenix-e2e}
PEER_VERSION=$(sed -n 's#^require github.com/open-telemetry/opentelemetry-operator ##p' benches/peer/go.mod)
PEER_BIN=$CACHE/otel-operator-$PEER_VERSION/otel-operator
export PHOENIX_BENCH_PEER_VERSION=$PEER_VERSION
if [[ ,${PHOENIX_BENCH_PARTS:-peer}, == *,peer,* ]]; then
  if [[ ! -x $PEER_BIN && ${PHOENIX_BENCH_PEER_BUILD:-1} == 1 ]]; then
    log "building the peer, OpenTelemetry Operator $PEER_VERSION (first time only; log: $OUT/peer-build.log)"
    mkdir -p "$(dirname "$PEER_BIN")"
    # go.sum pins every module; the operator module itself is not in this proxy's checksum
    # database, so it is verified against go.sum only.
    if (cd benches/peer && GOTOOLCHAIN=local GOFLAGS=-mod=mod \
          GONOSUMDB=github.com/open-telemetry/opentelemetry-operator \
          go build -o "$PEER_BIN.tmp" github.com/open-telemetry/opentelemetry-operator) >"$OUT/peer-build.log" 2>&1; then
      mv "$PEER_BIN.tmp" "$PEER_BIN"
    else
      rm -f "$PEER_BIN.tmp"
      log "peer build failed (see $OUT/peer-build.log)"
    fi
  fi
  if [[ -x $PEER_BIN ]]; then
    export PHOENIX_BENCH_PEER_BIN=$PEER_BIN
    PHOENIX_BENCH_PEER_CRDS=$(cd benches/peer && GOTOOLCHAIN=local GOFLAGS=-mod=mod \
      go list -m -f '{{.Dir}}' github.com/open-telemetry/opentelemetry-operator)/config/crd/bases
    export PHOENIX_BENCH_PEER_CRDS
  elif [[ ${PHOENIX_BENCH_PEER_BUILD:-1} == 1 ]]; then
    export PHOENIX_BENCH_PEER_SKIP="the OpenTelemetry Operator $PEER_VERSION could not be built from the Go module proxy here (see $OUT/peer-build.log)"
  else
    export PHOENIX_BENCH_PEER_SKIP="not built (PHOENIX_BENCH_PEER_BUILD=0 and no cached $PEER_BIN)"
  fi
fi

log "building release binaries and the bench"
# The simulator of the reduction part (target/release). Not phoenix's own binaries: `cargo bench`
# below writes them to target/release too, built with the bench profile.
cargo build --release -p phoenix-simulator --bins
# The operator under test is the binary the image ships (static, musl where it can be built): its
# allocator decides much of the RSS the memory targets are about.
if [[ -z ${PHOENIX_BENCH_OPERATOR_BIN:-} ]]; then
  log "building the operator as its image ships it (scripts/static-bins.sh)"
  PHOENIX_BENCH_OPERATOR_BIN=$(scripts/static-bins.sh phoenix-operator)/phoenix-operator
  export PHOENIX_BENCH_OPERATOR_BIN
fi
cargo bench --bench phoenix --no-run

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  log "tearing down the bench cluster ($DIR)"
  tests/e2e/cluster.sh down --dir "$DIR" || log "warning: cluster teardown failed; see $DIR"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting a private control plane in $DIR"
tests/e2e/cluster.sh up --dir "$DIR" >/dev/null

export PHOENIX_E2E_ENV=$DIR/env PHOENIX_BENCH_OUT=$OUT
cargo bench --bench phoenix
