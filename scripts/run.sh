#!/usr/bin/env bash
# The README's first command: installs what the build needs, builds berth (release) and runs
# the single-node cluster (and installs nginx and wget, which pods with those images run until
# berth runs real images): API server (embedded store, data in ./berth-data), controllers, and
# a node (agent, proxy, DNS) in network namespace `berth`, reachable from this shell. The node
# needs root, so berth runs through sudo unless this is root already; the kubeconfig is
# written to ./berth.kubeconfig for the user who ran this. Extra arguments go to
# `berth server` (see `berth server --help`). Ctrl-C stops it and removes what it made.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
missing=()
for p in mold protobuf-compiler libprotobuf-dev iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
"${sudo[@]}" bash scripts/workload-programs.sh
cargo build --release --bin berth
exec "${sudo[@]}" target/release/berth server --data-dir ./berth-data --kubeconfig ./berth.kubeconfig "$@"
