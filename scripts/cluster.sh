#!/usr/bin/env bash
# A local Knative cluster the way Knative's quickstart (kn quickstart kind) builds one: a kind
# cluster, Knative Serving with the Kourier ingress, Knative Eventing with the in-memory channel
# and the multi-tenant channel-based broker; then this repository's images and the dev overlay.
#
# Needs Docker, kind, and the internet (release manifests come from GitHub). It has never been
# run in this repository's CI, which has neither Docker nor a cluster: see docs/deploy.md for
# what is verified offline instead.
#
# Usage: scripts/cluster.sh            (or: make cluster)
# Env:   CLUSTER_NAME (knfn), KUBECTL (kubectl), SKIP_DEPLOY=1 to stop after installing Knative.
set -euo pipefail

# Pinned versions. Serving, Kourier and Eventing are released together; bump them together.
KNATIVE_SERVING_VERSION="${KNATIVE_SERVING_VERSION:-1.22.1}"
KNATIVE_KOURIER_VERSION="${KNATIVE_KOURIER_VERSION:-1.22.1}"
KNATIVE_EVENTING_VERSION="${KNATIVE_EVENTING_VERSION:-1.22.2}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
CLUSTER_NAME="${CLUSTER_NAME:-knfn}"
KUBECTL="${KUBECTL:-kubectl}"
# Kourier is reached from the host on this port (kind maps it to the node's NodePort 31080).
HOST_PORT="${HOST_PORT:-80}"

SERVING_URL="https://github.com/knative/serving/releases/download/knative-v${KNATIVE_SERVING_VERSION}"
KOURIER_URL="https://github.com/knative-extensions/net-kourier/releases/download/knative-v${KNATIVE_KOURIER_VERSION}"
EVENTING_URL="https://github.com/knative/eventing/releases/download/knative-v${KNATIVE_EVENTING_VERSION}"

cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# kubectl apply, retried: right after a CRD or webhook install the API server may still refuse.
apply() {
  local attempt
  for attempt in 1 2 3 4 5; do
    if "$KUBECTL" apply "$@"; then return 0; fi
    echo "apply failed (attempt $attempt), retrying in 5s" >&2
    sleep 5
  done
  return 1
}

wait_pods() {
  "$KUBECTL" wait pod --all --for=condition=Ready --timeout=10m -l '!job-name' -n "$1"
}

create_cluster() {
  if kind get clusters | grep -qx "$CLUSTER_NAME"; then
    log "kind cluster $CLUSTER_NAME already exists"
    return
  fi
  log "creating kind cluster $CLUSTER_NAME ($KIND_NODE_IMAGE)"
  kind create cluster --name "$CLUSTER_NAME" --wait 120s --config - <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    image: ${KIND_NODE_IMAGE}
    extraPortMappings:
      - containerPort: 31080
        hostPort: ${HOST_PORT}
        listenAddress: 127.0.0.1
YAML
}

install_serving() {
  log "Knative Serving v$KNATIVE_SERVING_VERSION"
  apply -f "$SERVING_URL/serving-crds.yaml"
  "$KUBECTL" wait --for=condition=Established --all crd --timeout=2m
  apply -f "$SERVING_URL/serving-core.yaml"
  wait_pods knative-serving

  log "Kourier v$KNATIVE_KOURIER_VERSION"
  apply -f "$KOURIER_URL/kourier.yaml"
  wait_pods kourier-system
  "$KUBECTL" patch configmap/config-network -n knative-serving --type merge \
    -p '{"data":{"ingress.class":"kourier.ingress.networking.knative.dev"}}'
  # Expose the Kourier gateway on the node port kind forwards to the host.
  apply -f - <<YAML
apiVersion: v1
kind: Service
metadata:
  name: kourier-ingress
  namespace: kourier-system
  labels:
    networking.knative.dev/ingress-provider: kourier
spec:
  type: NodePort
  selector:
    app: 3scale-kourier-gateway
  ports:
    - name: http2
      nodePort: 31080
      port: 80
      targetPort: 8080
YAML
  # Route names like hello.default.127.0.0.1.sslip.io resolve to 127.0.0.1 on the host.
  "$KUBECTL" patch configmap/config-domain -n knative-serving --type merge \
    -p '{"data":{"127.0.0.1.sslip.io":""}}'
}

install_eventing() {
  log "Knative Eventing v$KNATIVE_EVENTING_VERSION"
  apply -f "$EVENTING_URL/eventing-crds.yaml"
  "$KUBECTL" wait --for=condition=Established --all crd --timeout=2m
  apply -f "$EVENTING_URL/eventing-core.yaml"
  wait_pods knative-eventing
  apply -f "$EVENTING_URL/in-memory-channel.yaml"
  wait_pods knative-eventing
  apply -f "$EVENTING_URL/mt-channel-broker.yaml"
  wait_pods knative-eventing
}

deploy() {
  log "building images and loading them into kind"
  make images
  make kind-load CLUSTER_NAME="$CLUSTER_NAME"
  log "deploying knative/overlays/dev"
  make deploy OVERLAY=dev KUBECTL="$KUBECTL"
  "$KUBECTL" wait --for=condition=Ready ksvc --all -n default --timeout=10m
  "$KUBECTL" get ksvc -n default
}

create_cluster
install_serving
install_eventing
if [[ "${SKIP_DEPLOY:-0}" != "1" ]]; then
  deploy
fi
log "done. Try: curl -H 'Host: hello.default.127.0.0.1.sslip.io' http://127.0.0.1:${HOST_PORT}/"
