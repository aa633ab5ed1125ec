#!/usr/bin/env bash
# `just demo`: a real Experiment end to end on this machine. Starts the local control plane
# (tests/e2e/cluster.sh), installs the CRDs, runs the local pod runner (Phoenix's collector and
# simulator pods become real processes here) and the operator, applies examples/experiment-demo.yaml,
# shows the phases as they happen and prints the results. The operator and pod runner stop at the end
# (so do their processes); the control plane and Prometheus stay up for a look (`just cluster-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DIR=$REPO/target/e2e/cluster
LOGS=$REPO/target/e2e/demo
TIMEOUT=${PHOENIX_DEMO_TIMEOUT:-900}
mkdir -p "$LOGS"
t0=$SECONDS
say() { printf '[%4ds] %s\n' "$((SECONDS - t0))" "$*"; }

say "building phoenix-operator, phoenix-simulator and the local pod runner"
cargo build --quiet --workspace --bins

if [[ -f $DIR/env ]] && (set -a; source "$DIR/env"; "$KUBECTL" --kubeconfig "$KUBECONFIG" get --raw /readyz >/dev/null 2>&1); then
  say "reusing the local control plane in $DIR"
else
  say "starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok, Prometheus)"
  tests/e2e/cluster.sh up --dir "$DIR" >/dev/null
fi
set -a; source "$DIR/env"; set +a
kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
kubectl delete experiment demo --ignore-not-found --wait=true >/dev/null

say "starting the local pod runner (node phoenix-local: collectors and simulator run as real processes)"
target/debug/phoenix-e2e-podrunner --collector-bin "$COLLECTOR_BIN" --simulator-bin target/debug/phoenix-simulator \
  --state-dir "$LOGS/podrunner" >"$LOGS/podrunner.log" 2>&1 &
pids+=($!)
say "starting the operator (logs: $LOGS/operator.log)"
target/debug/phoenix-operator --prometheus-url "$PROMETHEUS_URL" --http-addr 127.0.0.1:0 \
  --collector-image otelcol-phoenix:local --simulator-image phoenix-simulator:local >"$LOGS/operator.log" 2>&1 &
pids+=($!)

say "kubectl apply -f examples/experiment-demo.yaml"
kubectl apply -f examples/experiment-demo.yaml >/dev/null
last=""
while :; do
  phase=$(kubectl get experiment demo -o jsonpath='{.status.phase}' 2>/dev/null || true)
  if [[ $phase != "$last" ]]; then
    msg=$(kubectl get experiment demo -o jsonpath='{.status.message}' 2>/dev/null || true)
    say "phase ${phase:-Pending}${msg:+: $msg}"
    last=$phase
  fi
  case $phase in Completed|Failed|Aborted) break ;; esac
  if (( SECONDS - t0 > TIMEOUT )); then say "timed out after ${TIMEOUT}s"; break; fi
  sleep 2
done

echo
kubectl get experiment demo
echo
say "kubectl phoenix report demo"
target/debug/kubectl-phoenix --kubeconfig "$KUBECONFIG" report demo
target/debug/kubectl-phoenix --kubeconfig "$KUBECONFIG" report demo -o html > target/demo-report.html \
  && say "HTML report with the series chart: target/demo-report.html"
echo
say "done. Look further:"
echo "  $KUBECTL --kubeconfig $KUBECONFIG get exp demo -o yaml"
echo "  $KUBECTL --kubeconfig $KUBECONFIG describe exp demo"
echo "  Prometheus: $PROMETHEUS_URL/graph?g0.expr=count%20by%20(phoenix_variant)%20(%7B__name__%3D~%22process_.*%22%7D)"
echo "  stop the control plane: just cluster-down"
[[ $last == Completed ]]
