#!/usr/bin/env bash
# Installs what building and testing berth needs on a fresh Debian machine (run as root).
# Idempotent: a second run installs nothing new.
set -euo pipefail
packages=(
  mold               # fast linker (.cargo/config.toml)
  protobuf-compiler  # etcd-client generates its gRPC code at build time
  libprotobuf-dev    # ... and imports the well-known types (google/protobuf/*.proto) from it
  etcd-server        # the etcd backend's tests start a real etcd
  nftables iproute2  # node networking tests (network namespaces, nft)
  util-linux         # nsenter: tests run `berth server` in a namespace that plays the host
  iputils-ping       # node tests ping across veths and bridges
  dnsutils           # dig, for cluster DNS tests
  curl ca-certificates
  conntrack tcpdump  # what a failing data-plane e2e test prints (flows, link headers)
  python3            # the NetworkPolicy e2e probes (TCP, UDP, DNS) and UDP echo run in pods
  python3-yaml       # scripts/bench-footprint.py reads the kubeconfig
  runc               # the OCI runtime image pods run under
  busybox-static     # the e2e tests build their busybox image from it
  docker-registry    # the registry e2e tests push to and pull from (on 127.0.0.1 in a test netns)
  apache2-utils      # htpasswd -B, for that registry's basic auth
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash "$(dirname "$0")/workload-programs.sh"
if ! command -v kubectl >/dev/null; then
  echo "kubectl is required (the tests drive the real kubectl); install kubectl 1.32 or newer" >&2
  exit 1
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# The Python Kubernetes client, for the client-compatibility tests.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check kubernetes
