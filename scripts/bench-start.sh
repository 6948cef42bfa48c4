#!/usr/bin/env bash
# `berth server` exec -> ready with the node (proxy and DNS synced), with a fresh data dir and
# with an existing one, and the idle RSS/PSS of the whole single node, beside the reference
# daemons' start-up in the same run (../shared/bench/idle.sh: NSD, Knot, etcd).
# Everything runs inside a network namespace made here that plays the host (berth makes its
# node namespace from there); nothing touches the machine's own namespace.
# Ready = the host's query for kubernetes.default.svc.cluster.local through the kube-dns
# ClusterIP answered: the API server, controllers, proxy (DNAT programmed) and DNS all work.
# Env: REPS (default 5), DAEMONS (default "nsd knot etcd berth-fresh berth-existing").
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-../shared/bench}
[ -f "$bench/idle.sh" ] || { echo "no $bench/idle.sh (set BENCH_DIR)" >&2; exit 1; }
cargo build --release --bin berth
bin=$PWD/target/release/berth
host=bbh$$
node=bbn$$
run=$(mktemp -d /tmp/berth-bench-start.XXXXXX)
cleanup() {
    ip netns exec "$host" "$bin" cleanup --data-dir "$run/data" --node-netns "$node" >/dev/null 2>&1 || true
    ip netns del "$host" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT
ip netns add "$host"
ip -n "$host" link set lo up
cat > "$run/fresh.sh" <<EOS
#!/bin/sh
rm -rf $run/data
exec $bin server --data-dir $run/data --node-netns $node
EOS
cat > "$run/existing.sh" <<EOS
#!/bin/sh
exec $bin server --data-dir $run/data --node-netns $node
EOS
chmod +x "$run/fresh.sh" "$run/existing.sh"
ready='--dns 10.96.0.10:53:kubernetes.default.svc.cluster.local'
results() {
    local daemons="$1" cmd="$2"
    ip netns exec "$host" env REPS="${REPS:-5}" DAEMONS="$daemons" BERTH_START_CMD="$cmd" \
        BERTH_READY_ARGS="$ready" bash "$bench/idle.sh" 2>&1 | grep -v '^$'
}
daemons=${DAEMONS:-nsd knot etcd berth-fresh berth-existing}
refs=$(tr ' ' '\n' <<<"$daemons" | grep -v '^berth' | tr '\n' ' ' || true)
[ -z "${refs// }" ] || results "$refs" "$run/fresh.sh"
for d in $daemons; do
    case $d in
        berth-fresh) echo "== berth, fresh data dir each start"; results berth "$run/fresh.sh" | grep berth ;;
        berth-existing)
            # One start inside the host namespace makes the data dir (PKI, store) to reuse.
            ip netns exec "$host" "$run/fresh.sh" >/dev/null 2>&1 & pid=$!
            sleep 3; kill "$pid"; wait "$pid" || true
            echo "== berth, existing data dir"; results berth "$run/existing.sh" | grep berth ;;
    esac
done
