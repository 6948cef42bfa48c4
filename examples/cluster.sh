#!/usr/bin/env bash
# A one-node berth cluster for the examples, in two network namespaces of its own:
# `berth-node` (the node: berth server with its agent, proxy and DNS) and `berth-lan` (a
# machine on the node's LAN, where you run kubectl and curl), joined by a veth pair.
# Nothing is added to the root namespace. Run as root from the repository root:
#
#   bash examples/cluster.sh up     # start (berth's log: /tmp/berth-example/berth.log)
#   ip netns exec berth-lan bash    # a shell on the LAN; then: export KUBECONFIG=/tmp/berth-example/data/kubeconfig
#   bash examples/cluster.sh down   # stop berth and delete both namespaces
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/berth-example
berth=${BERTH:-target/release/berth}
case "${1:-}" in
up)
  [[ -x $berth ]] || { echo "build berth first: cargo build --release" >&2; exit 1; }
  ip netns add berth-node
  ip netns add berth-lan
  ip -n berth-node link add eth0 type veth peer name eth0 netns berth-lan
  ip -n berth-node addr add 192.168.231.1/24 dev eth0
  ip -n berth-lan addr add 192.168.231.2/24 dev eth0
  for ns in berth-node berth-lan; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
  ip -n berth-node route add default via 192.168.231.2
  mkdir -p "$dir"
  # LoadBalancer IPs come from this pool; the node answers ARP for them on the LAN.
  ip netns exec berth-node "$berth" server --node node-1 --bind 192.168.231.1:6443 \
    --data-dir "$dir/data" --lb-pool 192.168.231.100-192.168.231.150 \
    >"$dir/berth.log" 2>&1 &
  echo $! >"$dir/berth.pid"
  for _ in $(seq 100); do
    grep -q "ready at" "$dir/berth.log" && break
    sleep 0.1
  done
  grep "ready at" "$dir/berth.log"
  echo "now: ip netns exec berth-lan bash; export KUBECONFIG=$dir/data/kubeconfig"
  ;;
down)
  if [[ -f $dir/berth.pid ]]; then
    pid=$(cat "$dir/berth.pid")
    # SIGTERM: the agent stops its pods and deletes their namespaces.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/berth.pid"
  fi
  ip netns del berth-lan 2>/dev/null || true
  ip netns del berth-node 2>/dev/null || true
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
