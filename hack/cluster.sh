#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, of a current release built from Go modules
# (hack/k8s-binaries.sh; GOVERNOR_K8S_VERSION picks the minor, default 1.37): etcd,
# kube-apiserver (with the full aggregation / front-proxy flag set), kube-controller-manager
# (HPA every 2 s with its default tolerance; deployment, replicaset, job, endpoint-slice,
# disruption, garbage collector, namespace, service-account and root-CA publisher
# controllers) and kube-scheduler; and, when run as root, the node agent
# (tools/devcluster/node-agent): Nodes governor-node-a and governor-node-b whose pods really run
# as processes in network namespaces on the pod network $GOVERNOR_POD_CIDR (default
# 10.213.0.0/16), with a service proxy for ClusterIPs. One more Node, governor-local-node
# (tainted), belongs to the stand-in kubelet that tests and the demo run for imaginary pods.
#
#   hack/cluster.sh up         start (or confirm) the control plane; prints `export KUBECONFIG=…`
#                              and `export PATH=…` (the kubectl of the same release first)
#   hack/cluster.sh down       stop exactly the processes `up` started, and remove every network
#                              namespace, veth and bridge the node agent made (also after a crash)
#   hack/cluster.sh status     say what runs
#   hack/cluster.sh logs       print the tail of every component's log
#   hack/cluster.sh lose-node  N  kill every pod on Node N at once, cut them off, make N NotReady
#   hack/cluster.sh rejoin-node N bring a lost Node back, as after a reboot
#   hack/cluster.sh restart-apiserver  stop kube-apiserver and start it again
#   hack/cluster.sh reset      down, then delete the state directory
#
# GOVERNOR_NODE_AGENT=0 skips the node agent (it is skipped, with a message, when not root).
# GOVERNOR_AGGREGATOR_ROUTING=true starts kube-apiserver with --enable-aggregator-routing.
#
# State lives in $GOVERNOR_CLUSTER_DIR (default: <repo>/.cluster): pki/, etcd data,
# logs/, pids/, kubeconfig and env. A state directory made for another Kubernetes version
# (or another service CIDR) is reset on `up` (etcd data does not move between minors here).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${GOVERNOR_CLUSTER_DIR:-$ROOT/.cluster}"
ETCD_PORT="${GOVERNOR_ETCD_PORT:-23790}"
APISERVER_PORT="${GOVERNOR_APISERVER_PORT:-6443}"
KCM_PORT="${GOVERNOR_KCM_PORT:-10257}"
PKI="$DIR/pki"
LOGS="$DIR/logs"
PIDS="$DIR/pids"
KUBECONFIG_FILE="$DIR/kubeconfig"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler node-agent)
SCHED_PORT="${GOVERNOR_SCHEDULER_PORT:-10259}"
NODE_NAME=governor-local-node
POD_CIDR="${GOVERNOR_POD_CIDR:-10.213.0.0/16}"
SERVICE_CIDR="${GOVERNOR_SERVICE_CIDR:-10.0.0.0/24}"
KUBERNETES_SVC_IP="${SERVICE_CIDR%.*/*}.1" # the first address: the kubernetes Service
AGENT_PREFIX="${GOVERNOR_NODE_AGENT_PREFIX:-gov}"
# true: the aggregator dials an APIService's endpoint IPs itself instead of its ClusterIP.
# It then refuses ExternalName Services, which `governor run --registration=local` uses, so
# only the in-cluster suite runs with it (docs/development.md: The local control plane).
AGGREGATOR_ROUTING="${GOVERNOR_AGGREGATOR_ROUTING:-false}"
AGENT_DIR="$DIR/node-agent"
AGENT_NODES=governor-node-a,governor-node-b

log() { echo "[cluster] $*" >&2; }

# pid of a component we started, if it is still that process
running_pid() {
  local name=$1 pidfile="$PIDS/$1.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$DIR" || return 1
  echo "$pid"
}

gen_pki() {
  [[ -f $PKI/admin.crt ]] && return 0
  log "generating certificates in $PKI"
  mkdir -p "$PKI"
  (
    cd "$PKI"
    local days=3650
    ca() { # name cn
      openssl req -x509 -newkey rsa:2048 -nodes -days $days -subj "/CN=$2" \
        -keyout "$1.key" -out "$1.crt" 2>/dev/null
    }
    sign() { # name ca subj ext
      openssl req -new -newkey rsa:2048 -nodes -subj "$3" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days $days \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    ca ca governor-local-ca
    ca front-proxy-ca governor-local-front-proxy-ca
    sign apiserver ca "/CN=kube-apiserver" "$(printf '%s\n' \
      'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
      "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP")"
    client_ext="$(printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')"
    sign front-proxy-client front-proxy-ca "/CN=front-proxy-client" "$client_ext"
    sign admin ca "/O=system:masters/CN=admin" "$client_ext"
    sign kube-controller-manager ca "/CN=system:kube-controller-manager" "$client_ext"
    sign kube-scheduler ca "/CN=system:kube-scheduler" "$client_ext"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # file user
  local file=$1 user=$2
  rm -f "$file"
  KUBECONFIG="$file" "$BIN/kubectl" config set-cluster local --server="https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  KUBECONFIG="$file" "$BIN/kubectl" config set-credentials "$user" --client-certificate="$PKI/$user.crt" \
    --client-key="$PKI/$user.key" --embed-certs=true >/dev/null
  KUBECONFIG="$file" "$BIN/kubectl" config set-context local --cluster=local --user="$user" >/dev/null
  KUBECONFIG="$file" "$BIN/kubectl" config use-context local >/dev/null
}

start() { # name cmd...
  local name=$1
  shift
  if running_pid "$name" >/dev/null; then return 0; fi
  log "starting $name (log: $LOGS/$name.log)"
  nohup setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

wait_for() { # what seconds cmd...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # The process itself, not running_pid: just after `start`, the pid may still be the
    # forked shell on its way to exec (its command line not yet the component's).
    if ! kill -0 "$(cat "$PIDS/$what.pid" 2>/dev/null)" 2>/dev/null; then
      log "$what exited; log tail:"
      tail -n 40 "$LOGS/$what.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "$what did not become ready in ${secs}s; log tail:"
  tail -n 40 "$LOGS/$what.log" >&2 || true
  return 1
}

apiserver_ready() {
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q ok
}

# The stand-in kubelet's Node. Nothing runs a kubelet for it: the stand-in kubelet
# (tools/devcluster) binds and plays the pods of namespaces annotated for it (PodNodeSelector),
# and no node-lifecycle controller runs, so the Node stays Ready. Its taint keeps every
# other pod (those that must really run) off it.
register_node() {
  local k=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE")
  "${k[@]}" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  labels: { kubernetes.io/hostname: $NODE_NAME, kubernetes.io/os: linux, kubernetes.io/arch: amd64, governor.dev/stand-in: "true" }
spec:
  taints: [{ key: governor.dev/stand-in, value: "true", effect: NoSchedule }]
NODE
  # Exactly our taint: the apiserver adds node.kubernetes.io/not-ready to a new Node.
  "${k[@]}" patch node "$NODE_NAME" --type=merge \
    -p '{"spec":{"taints":[{"key":"governor.dev/stand-in","value":"true","effect":"NoSchedule"}]}}' >/dev/null
  "${k[@]}" patch node "$NODE_NAME" --subresource=status --type=merge -p "$(
    cat <<STATUS
{"status": {
  "capacity": {"cpu": "16", "memory": "64Gi", "pods": "250"},
  "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "250"},
  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "$NODE_NAME"}],
  "conditions": [{"type": "Ready", "status": "True", "reason": "GovernorLocalNode",
    "message": "the local control plane's node (no kubelet; see tools/devcluster)",
    "lastHeartbeatTime": "$(date -u +%FT%TZ)", "lastTransitionTime": "$(date -u +%FT%TZ)"}]
}}
STATUS
  )" >/dev/null
}

agent_ready() {
  curl -sf --unix-socket "$AGENT_DIR/agent.sock" http://agent/healthz | grep -q ok
}

start_node_agent() { # version
  if [[ ${GOVERNOR_NODE_AGENT:-1} == 0 ]]; then return 0; fi
  if [[ $EUID -ne 0 ]]; then
    log "not root: no node agent (pods that must really run stay Pending; see docs/development.md)"
    return 0
  fi
  if [[ ! -f $ROOT/node_modules/tsx/package.json ]]; then
    log "node_modules is missing: run npm ci first for the node agent"
    return 1
  fi
  mkdir -p "$AGENT_DIR"
  start node-agent node --import tsx "$ROOT/hack/node-agent.ts" \
    --kubeconfig "$KUBECONFIG_FILE" --state-dir "$AGENT_DIR" --ca-file "$PKI/ca.crt" \
    --apiserver "127.0.0.1:$APISERVER_PORT" --nodes "$AGENT_NODES" --pod-cidr "$POD_CIDR" --prefix "$AGENT_PREFIX" \
    --version "v${1#k8s-}"
  wait_for node-agent 60 agent_ready
}

# What the node agent made (prefix "gov" by default: namespaces gov-<id>, veths gov<id>,
# bridge govbr0), removed whether or not the agent stopped cleanly.
cleanup_pod_network() {
  command -v ip >/dev/null && [[ $EUID -eq 0 && -d $AGENT_DIR ]] || return 0
  local ns pid link
  for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1 | grep -E "^$AGENT_PREFIX-[0-9a-f]{8}\$"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^(${AGENT_PREFIX}br0|$AGENT_PREFIX[0-9a-f]{8})\$"); do
    ip link del "$link" 2>/dev/null || true
  done
}

# Restarts kube-apiserver with the same flags (a fault the in-cluster suite injects).
restart_apiserver() {
  BIN="$("$ROOT/hack/k8s-binaries.sh")"
  stop_component kube-apiserver
  start_apiserver
}

node_control() { # name lose|rejoin
  curl -sf -X POST --unix-socket "$AGENT_DIR/agent.sock" "http://agent/nodes/$1/$2"
}

start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --endpoint-reconciler-type=none \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --disable-admission-plugins=ServiceAccount \
    --enable-admission-plugins=PodNodeSelector \
    --enable-aggregator-routing="$AGGREGATOR_ROUTING" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --cert-dir="$DIR/apiserver-certs"
  wait_for kube-apiserver 60 apiserver_ready
}

up() {
  BIN="$("$ROOT/hack/k8s-binaries.sh")"
  local version
  version=$(basename "$(dirname "$BIN")")
  command -v curl >/dev/null || { log "curl is required"; exit 1; }
  # etcd data and certificates belong to one release and one service CIDR (the kubernetes
  # Service's ClusterIP is stored, and named in the apiserver certificate).
  local made_for="$version services=$SERVICE_CIDR"
  if [[ -f $DIR/version && $(<"$DIR/version") != "$made_for" ]]; then
    log "$DIR was made for $(<"$DIR/version"), not $made_for: resetting it"
    down
    rm -rf "$DIR"
  fi
  mkdir -p "$DIR" "$LOGS" "$PIDS" "$DIR/etcd"
  echo "$made_for" >"$DIR/version"
  # A running apiserver started with the other routing setting is restarted with this one.
  if [[ -f $DIR/aggregator-routing && $(<"$DIR/aggregator-routing") != "$AGGREGATOR_ROUTING" ]] &&
    running_pid kube-apiserver >/dev/null; then
    log "restarting kube-apiserver with --enable-aggregator-routing=$AGGREGATOR_ROUTING"
    stop_component kube-apiserver
  fi
  echo "$AGGREGATOR_ROUTING" >"$DIR/aggregator-routing"
  gen_pki
  [[ -f $KUBECONFIG_FILE ]] || write_kubeconfig "$KUBECONFIG_FILE" admin
  local c
  for c in kube-controller-manager kube-scheduler; do
    [[ -f $DIR/$c.kubeconfig ]] || write_kubeconfig "$DIR/$c.kubeconfig" "$c"
  done

  start etcd "$BIN/etcd" --name governor-local --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "governor-local=http://127.0.0.1:$((ETCD_PORT + 1))"
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start_apiserver

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --leader-elect=false --use-service-account-credentials=true \
    --controllers=horizontal-pod-autoscaler-controller,deployment-controller,job-controller,replicaset-controller,endpointslice-controller,disruption-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller \
    --horizontal-pod-autoscaler-sync-period=2s \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --cert-dir="$DIR/kcm-certs"
  wait_for kube-controller-manager 30 curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"

  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/kube-scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --cert-dir="$DIR/scheduler-certs"
  wait_for kube-scheduler 30 curl -sfk "https://127.0.0.1:$SCHED_PORT/healthz"
  register_node
  start_node_agent "$version"

  printf 'export KUBECONFIG=%s\nexport PATH=%s:$PATH\n' "$KUBECONFIG_FILE" "$BIN" >"$DIR/env"
  log "control plane is up (Kubernetes ${version#k8s-})"
  cat "$DIR/env"
}

stop_component() { # name
  local name=$1 pid
  if pid=$(running_pid "$name"); then
    log "stopping $name (pid $pid)"
    kill -CONT "$pid" 2>/dev/null || true # a paused etcd cannot exit
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    [[ -d /proc/$pid ]] && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

down() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_component "${COMPONENTS[$i]}"; done
  cleanup_pod_network
}

status() {
  local name pid rc=0
  for name in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$name"); then echo "$name: running (pid $pid)"
    elif [[ $name == node-agent ]] && { [[ $EUID -ne 0 ]] || [[ ${GOVERNOR_NODE_AGENT:-1} == 0 ]]; }; then echo "$name: not used"
    else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

logs() {
  local name
  for name in "${COMPONENTS[@]}"; do
    echo "===== $name ($LOGS/$name.log) ====="
    tail -n "${LINES_PER_LOG:-30}" "$LOGS/$name.log" 2>/dev/null || echo "(no log)"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  logs) logs ;;
  lose-node) node_control "${2:?usage: $0 lose-node NODE}" lose ;;
  restart-apiserver) restart_apiserver ;;
  rejoin-node) node_control "${2:?usage: $0 rejoin-node NODE}" rejoin ;;
  reset) down; rm -rf "$DIR" ;;
  *) echo "usage: $0 up|down|status|logs|lose-node NODE|rejoin-node NODE|restart-apiserver|reset" >&2; exit 2 ;;
esac
