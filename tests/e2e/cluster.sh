#!/usr/bin/env bash
# cluster.sh — a local Kubernetes control plane as plain processes on loopback, for e2e tests and the
# demo (DESIGN.md §5). No container runtime: kwok simulates 3 nodes, so Pods become Running/Ready,
# Job pods Succeed, and Deployments, DaemonSets, Jobs and garbage collection all progress.
#
# Usage:
#   tests/e2e/cluster.sh up   [--dir DIR] [--foreground]
#   tests/e2e/cluster.sh down [--dir DIR]
# DIR defaults to target/e2e/cluster (relative to the repo root).
#
# `up` runs build.sh (cached after the first run), then starts, on free random 127.0.0.1 ports:
# etcd, kube-apiserver (TLS + client certs, RBAC, ServiceAccount tokens), kube-controller-manager,
# kube-scheduler, kwok, Prometheus (remote-write receiver on), and creates the nodes kwok-node-{0,1,2}
# (label type=kwok, no taints). It writes DIR/env (also copied to target/e2e/env for the default DIR):
#   KUBECONFIG APISERVER_URL PROMETHEUS_URL PROMETHEUS_REMOTE_WRITE_URL E2E_DIR COLLECTOR_BIN KUBECTL
# and prints the same lines on stdout (progress goes to stderr). On any failure it names the
# component, shows the tail of its log, stops what it started and exits non-zero; DIR/logs is kept.
# --foreground: stays in the foreground after printing the env lines and a final line `READY`, and
# tears everything down (like `down`) on SIGTERM/SIGINT or when its stdin reaches EOF; a parent
# process keeps a pipe to its stdin open for as long as it wants the cluster.
#
# `down` stops every process recorded in DIR/pids (TERM, then KILL) and removes DIR. Idempotent.
#
# Owns DIR entirely: pki/ (CA, serving and client certs, service-account keys), kubeconfigs,
# etcd/ and prometheus/ data, pids/, logs/<component>.log, env, and the marker file .phoenix-e2e-cluster
# (DIR is only ever deleted when that marker is in it).
set -euo pipefail

E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E/../.." && pwd)
CACHE=${PHOENIX_E2E_CACHE:-$HOME/.cache/phoenix-e2e}
DEFAULT_DIR=$REPO/target/e2e/cluster
MARKER=.phoenix-e2e-cluster
# Start/stop order; `down` stops in reverse.
COMPONENTS=(etcd prometheus kube-apiserver kube-controller-manager kube-scheduler kwok)
NODES=(kwok-node-0 kwok-node-1 kwok-node-2)
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1 # first address of SERVICE_CIDR: the `kubernetes` Service

log() { echo "cluster.sh: $*" >&2; }
die() { echo "cluster.sh: error: $*" >&2; exit 1; }

usage() { sed -n '6,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------
# Processes

# running PID : whether the process exists and has not exited. A zombie has exited; its parent has
# not reaped it yet. (The state follows the last ')': the command name in parentheses may itself
# hold spaces or parentheses.)
running() {
  local stat state
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
  state=${stat##*) }
  [[ ${state%% *} != Z ]]
}

# A recorded pid only counts if that process still runs with DIR in its command line (guards against
# pid reuse after a reboot or a crash).
live_pid() {
  local f=$DIR/pids/$1.pid pid cmd ppid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
  if [[ -z $cmd ]]; then
    # Our own child in the middle of exec (its command line reads empty until the new image is
    # set up; on a loaded machine a startup check can see that): alive. Any other process with no
    # command line (a kernel thread that took a recycled pid) is not ours.
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    [[ $ppid == "$$" ]] || return 1
  elif [[ $cmd != *"$DIR"* ]]; then
    return 1
  fi
  echo "$pid"
}

stop_all() {
  [[ -d $DIR/pids ]] || return 0
  local pids=() pid i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    if pid=$(live_pid "${COMPONENTS[i]}"); then pids+=("$pid"); kill -TERM "$pid" 2>/dev/null || true; fi
  done
  if ! wait_gone 50 "${pids[@]}"; then
    log "killing what ignored SIGTERM for 5s"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait_gone 50 "${pids[@]}" || log "warning: still running after SIGKILL: ${pids[*]}"
  fi
  rm -rf "$DIR/pids"
}

# wait_gone TENTHS PID... : waits until every PID has exited (a zombie counts as exited).
wait_gone() {
  local n=$1 pid alive; shift
  for ((; n > 0; n--)); do
    alive=0
    for pid in "$@"; do
      running "$pid" && alive=1
    done
    ((alive)) || return 0
    sleep 0.1
  done
  return 1
}

# Removes DIR (only if it is ours). With keep_logs, leaves DIR/logs and the marker for inspection.
remove_dir() {
  [[ -e $DIR ]] || return 0
  [[ -f $DIR/$MARKER ]] || die "$DIR exists but is not a cluster directory (no $MARKER); not removing it"
  if [[ ${1:-} == keep_logs ]]; then
    find "$DIR" -mindepth 1 -maxdepth 1 ! -name logs ! -name "$MARKER" -exec rm -rf {} +
  else
    rm -rf "$DIR"
    [[ $DIR != "$DEFAULT_DIR" ]] || rm -f "$REPO/target/e2e/env"
  fi
}

# start NAME BINARY ARGS... : starts a component in the background, stdin from /dev/null, output
# to DIR/logs/NAME.log, pid in DIR/pids/NAME.pid.
start() {
  local name=$1; shift
  "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name.pid"
}

fail_component() {
  local name=$1 why=$2 logf=$DIR/logs/$1.log
  echo "cluster.sh: error: $name $why; log: $logf" >&2
  if [[ -s $logf ]]; then echo "---- last 20 lines of $logf ----" >&2; tail -n 20 "$logf" >&2; echo "----" >&2; fi
  exit 1
}

# wait_ready NAME TIMEOUT_S CHECK_CMD... : polls CHECK_CMD until it succeeds; fails if the process
# exits first or the timeout passes.
wait_ready() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    live_pid "$name" >/dev/null || fail_component "$name" "exited during startup"
    ((SECONDS < deadline)) || fail_component "$name" "not ready after ${timeout}s"
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------------
# Ports and certificates

declare -A TAKEN=()
# free_port VAR... : sets each VAR to a distinct free port on 127.0.0.1, below the kernel's ephemeral
# range so that outgoing connections never take it. (Assigns globals: no subshell, so TAKEN persists.)
free_port() {
  local var p tries
  for var in "$@"; do
    for ((tries = 0; ; tries++)); do
      ((tries < 200)) || die "no free port found on 127.0.0.1"
      p=$((20000 + RANDOM % 12000))
      [[ -z ${TAKEN[$p]:-} ]] || continue
      [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]] || continue
      ! (: </dev/tcp/127.0.0.1/"$p") 2>/dev/null || continue
      TAKEN[$p]=1; printf -v "$var" %s "$p"; break
    done
  done
}

# cert NAME SUBJECT EXTENSIONS : an EC P-256 key and a certificate signed by the cluster CA.
cert() {
  local name=$1 subj=$2 ext=$3 pki=$DIR/pki
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$pki/$name.key" \
    -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -out "$pki/$name.crt" \
    -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext") 2>/dev/null
  rm -f "$pki/$name.csr"
}

gen_pki() {
  local pki=$DIR/pki
  mkdir -p "$pki"
  openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$pki/ca.key" \
    -out "$pki/ca.crt" -days 3650 -sha256 -subj "/CN=phoenix-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" \
    "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # Client identities. kube-controller-manager runs every controller with its own credentials
  # (--use-service-account-credentials=false), which needs more than the system:kube-controller-manager
  # role grants, so it is in system:masters like admin and kwok; the scheduler uses its bootstrap role.
  cert admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  cert kube-controller-manager "/O=system:masters/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  cert kube-scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  cert kwok "/O=system:masters/CN=kwok" "extendedKeyUsage=clientAuth"
  # Service-account token signing key pair.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  rm -f "$pki/ca.srl"
}

# kubeconfig NAME USER : DIR/NAME.kubeconfig with certificates embedded (self-contained).
kubeconfig() {
  local out=$1 user=$2 pki=$DIR/pki
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: phoenix-e2e
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: phoenix-e2e
  context:
    cluster: phoenix-e2e
    user: $user
current-context: phoenix-e2e
EOF
}

# ---------------------------------------------------------------------------------------------------
# up / down

cmd_down() {
  [[ ! -e $DIR || -f $DIR/$MARKER ]] || die "$DIR exists but is not a cluster directory (no $MARKER); not touching it"
  stop_all
  remove_dir
}

cleanup_on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)) && [[ $PHASE == starting ]]; then
    log "startup failed: stopping what was started (logs kept in $DIR/logs)"
    stop_all; remove_dir keep_logs
  elif [[ $PHASE == foreground ]]; then
    log "tearing down $DIR"
    stop_all; remove_dir
  fi
  exit "$rc"
}

cmd_up() {
  local t0=$SECONDS
  if [[ -e $DIR ]]; then
    [[ -f $DIR/$MARKER ]] || die "$DIR exists and is not a cluster directory; choose another --dir"
    local c; for c in "${COMPONENTS[@]}"; do
      live_pid "$c" >/dev/null && die "a cluster is already running in $DIR ($c is up); run: $0 down --dir $DIR"
    done
    remove_dir # leftovers of a failed or killed run
  fi

  local paths bin kwok_bin kwok_stages collector
  paths=$("$E2E/build.sh") || die "build failed (see above)"
  bin=$(sed -n 's/^K8S_BIN_DIR=//p' <<<"$paths")
  kwok_bin=$(sed -n 's/^KWOK_BIN=//p' <<<"$paths")
  kwok_stages=$(sed -n 's/^KWOK_STAGES_DIR=//p' <<<"$paths")
  collector=$(sed -n 's/^COLLECTOR_BIN=//p' <<<"$paths")
  KUBECTL=$bin/kubectl

  PHASE=starting
  trap cleanup_on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$DIR"
  touch "$DIR/$MARKER"
  mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/etcd" "$DIR/prometheus"
  chmod 700 "$DIR/etcd"

  local etcd_port etcd_peer api_port kcm_port sched_port kwok_port prom_port
  free_port etcd_port etcd_peer api_port kcm_port sched_port kwok_port prom_port
  APISERVER_URL=https://127.0.0.1:$api_port
  local prom_url=http://127.0.0.1:$prom_port

  gen_pki
  local u; for u in admin kube-controller-manager kube-scheduler kwok; do kubeconfig "$DIR/$u.kubeconfig" "$u"; done
  mv "$DIR/admin.kubeconfig" "$DIR/kubeconfig"
  local pki=$DIR/pki

  # etcd and Prometheus depend on nothing: start both first.
  start etcd "$bin/etcd" --name e2e --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "e2e=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn

  cat >"$DIR/prometheus.yml" <<EOF
# Scrapes nothing: series arrive by remote write (the collector's prometheusremotewrite exporter).
global:
  evaluation_interval: 15s
scrape_configs: []
EOF
  start prometheus prometheus --config.file "$DIR/prometheus.yml" --storage.tsdb.path "$DIR/prometheus" \
    --web.listen-address "127.0.0.1:$prom_port" --web.enable-remote-write-receiver \
    --storage.tsdb.retention.time 1d

  wait_ready etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"
  # TaintNodesByCondition is off: it taints every new Node node.kubernetes.io/not-ready:NoSchedule,
  # and only the node-lifecycle controller (not run here: kwok nodes have no kubelet to watch) would
  # lift it. The requestheader flags only fill the extension-apiserver-authentication ConfigMap that
  # kube-controller-manager and kube-scheduler read (else they log an error every minute); no client
  # certificate with CN front-proxy-client is ever issued. --endpoint-reconciler-type none: the
  # default reconciler would publish 127.0.0.1 as the endpoint of Service `kubernetes`, which
  # validation rejects (loopback), logging an error every 10s; that Service keeps no endpoints.
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins ServiceAccount \
    --disable-admission-plugins TaintNodesByCondition \
    --requestheader-client-ca-file "$pki/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged \
    --endpoint-reconciler-type none
  local curl_admin=(curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")
  wait_ready kube-apiserver 120 "${curl_admin[@]}" "$APISERVER_URL/readyz"

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --controllers "$KCM_CONTROLLERS" \
    --use-service-account-credentials=false \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key"
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false

  # kwok: only nodes annotated kwok.x-k8s.io/node=fake; Stages from the kwok module (see build.sh).
  # A Job pod completes at once, except a simulator pod: like the real simulator, it runs for the
  # duration in its own configuration (the PHOENIX_SIMULATION env var) before it completes.
  local s; for s in "$kwok_stages"/*.yaml; do echo "---"; awk '
    /^  next:/ && FILENAME ~ /pod-complete/ {
      print "  delay:"
      print "    durationMilliseconds: 0"
      print "    durationFrom:"
      print "      expressionFrom: '"'"'.spec.containers[0].env[]? | select(.name == \"PHOENIX_SIMULATION\") | .value | fromjson | .duration'"'"'"
    }
    { print }' "$s"; done >"$DIR/kwok.yaml"
  start kwok "$kwok_bin" --kubeconfig "$DIR/kwok.kubeconfig" --config "$DIR/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$kwok_port" --node-lease-duration-seconds 40

  wait_ready kube-controller-manager 60 curl -sfk "https://127.0.0.1:$kcm_port/healthz"
  wait_ready kube-scheduler 60 curl -sfk "https://127.0.0.1:$sched_port/healthz"
  wait_ready kwok 60 curl -sf "http://127.0.0.1:$kwok_port/healthz"
  wait_ready prometheus 60 curl -sf "$prom_url/-/ready"

  # Three simulated nodes, schedulable by any pod (no taints).
  local n
  for n in "${NODES[@]}"; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
EOF
  done >"$DIR/nodes.yaml"
  local k=("$KUBECTL" --kubeconfig "$DIR/kubeconfig")
  "${k[@]}" apply -f "$DIR/nodes.yaml" >"$DIR/logs/kubectl.log" 2>&1 || fail_component kubectl "could not create the nodes"
  "${k[@]}" wait --for=condition=Ready node -l type=kwok --timeout=60s >>"$DIR/logs/kubectl.log" 2>&1 \
    || fail_component kwok "did not make the nodes Ready within 60s"
  # Pods can only be created once the namespace's default ServiceAccount exists.
  wait_ready kube-controller-manager 60 "${k[@]}" -n default get serviceaccount default

  {
    echo "KUBECONFIG=$DIR/kubeconfig"
    echo "APISERVER_URL=$APISERVER_URL"
    echo "PROMETHEUS_URL=$prom_url"
    echo "PROMETHEUS_REMOTE_WRITE_URL=$prom_url/api/v1/write"
    echo "E2E_DIR=$DIR"
    echo "COLLECTOR_BIN=$collector"
    echo "KUBECTL=$KUBECTL"
  } >"$DIR/env.partial"
  mv "$DIR/env.partial" "$DIR/env"
  if [[ $DIR == "$DEFAULT_DIR" ]]; then cp "$DIR/env" "$REPO/target/e2e/env"; fi
  cat "$DIR/env"
  log "cluster up in $((SECONDS - t0))s: $DIR (env: $DIR/env)"

  if ((FOREGROUND)); then
    PHASE=foreground
    echo READY
    # Returns on EOF; SIGTERM/SIGINT interrupt it through the traps. Either way the EXIT trap tears down.
    while IFS= read -r _; do :; done
    log "stdin closed"
    exit 0
  fi
  PHASE=done
  trap - EXIT INT TERM
}

# ---------------------------------------------------------------------------------------------------

KCM_CONTROLLERS=garbage-collector-controller,deployment-controller,replicaset-controller,daemonset-controller,job-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,ttl-after-finished-controller,root-ca-certificate-publisher-controller
PHASE=init
FOREGROUND=0
DIR=$DEFAULT_DIR
(($#)) || usage
CMD=$1; shift
while (($#)); do
  case $1 in
    --dir) (($# >= 2)) || usage; DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#--dir=}; shift ;;
    --foreground) FOREGROUND=1; shift ;;
    *) usage ;;
  esac
done
mkdir -p "$(dirname "$DIR")"
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
case $CMD in
  up) cmd_up ;;
  down) ((FOREGROUND == 0)) || usage; cmd_down ;;
  *) usage ;;
esac
