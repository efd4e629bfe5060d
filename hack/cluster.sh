#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd, kube-apiserver (with the full
# aggregation / front-proxy flag set) and kube-controller-manager (HPA every 2 s,
# deployment, replicaset, garbage collector, namespace, service-account controllers).
#
#   hack/cluster.sh up       start (or confirm) the control plane; prints `export KUBECONFIG=…`
#   hack/cluster.sh down     stop exactly the processes `up` started
#   hack/cluster.sh status   say what runs
#   hack/cluster.sh logs     print the tail of every component's log
#
# State lives in $GOVERNOR_CLUSTER_DIR (default: <repo>/.cluster): pki/, etcd data,
# logs/, pids/, kubeconfig and env. Binaries come from hack/k8s-binaries.sh.
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
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

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
      'subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1')"
    client_ext="$(printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')"
    sign front-proxy-client front-proxy-ca "/CN=front-proxy-client" "$client_ext"
    sign admin ca "/O=system:masters/CN=admin" "$client_ext"
    sign kube-controller-manager ca "/CN=system:kube-controller-manager" "$client_ext"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # file user
  local file=$1 user=$2
  rm -f "$file"
  KUBECONFIG="$file" kubectl config set-cluster local --server="https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  KUBECONFIG="$file" kubectl config set-credentials "$user" --client-certificate="$PKI/$user.crt" \
    --client-key="$PKI/$user.key" --embed-certs=true >/dev/null
  KUBECONFIG="$file" kubectl config set-context local --cluster=local --user="$user" >/dev/null
  KUBECONFIG="$file" kubectl config use-context local >/dev/null
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

up() {
  local bin
  bin="$("$ROOT/hack/k8s-binaries.sh")"
  command -v curl >/dev/null || { log "curl is required"; exit 1; }
  mkdir -p "$DIR" "$LOGS" "$PIDS" "$DIR/etcd"
  gen_pki
  [[ -f $KUBECONFIG_FILE ]] || write_kubeconfig "$KUBECONFIG_FILE" admin
  [[ -f $DIR/kube-controller-manager.kubeconfig ]] ||
    write_kubeconfig "$DIR/kube-controller-manager.kubeconfig" kube-controller-manager

  start etcd etcd --name governor-local --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "governor-local=http://127.0.0.1:$((ETCD_PORT + 1))"
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --disable-admission-plugins=ServiceAccount \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --cert-dir="$DIR/apiserver-certs"
  wait_for kube-apiserver 60 apiserver_ready

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
    --leader-elect=false --use-service-account-credentials=true \
    --controllers=horizontalpodautoscaling,deployment,replicaset,garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation \
    --horizontal-pod-autoscaler-sync-period=2s \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 \
    --cert-dir="$DIR/kcm-certs"
  wait_for kube-controller-manager 30 curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"

  echo "export KUBECONFIG=$KUBECONFIG_FILE" >"$DIR/env"
  log "control plane is up"
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

down() {
  local name pid i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[$i]}
    if pid=$(running_pid "$name"); then
      log "stopping $name (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
      [[ -d /proc/$pid ]] && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name.pid"
  done
}

status() {
  local name pid rc=0
  for name in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=1; fi
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
  reset) down; rm -rf "$DIR" ;;
  *) echo "usage: $0 up|down|status|logs|reset" >&2; exit 2 ;;
esac
