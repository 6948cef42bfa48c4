#!/usr/bin/env bash
# bench-footprint.sh - memory of the standalone service proxy and cluster DNS at SERVICES
# Services x 5 endpoints (default 10,000), and the DNS's read-your-writes latency.
#
# Everything runs in one network namespace made here (deleted on exit, also on failure):
#   `berth server --no-node` (embedded store) on 127.0.0.1:6443 there, as the e2e harness runs
#   it; bench-footprint.py loads namespace `bench` with SERVICES selector-less Services and
#   one EndpointSlice of 5 ready endpoints each;
#   `berth proxy --kubeconfig` (programs nftables in that namespace only), and once its first
#   full sync is in, its VmRSS / VmHWM / Pss (goal RSS < 50 MB);
#   `berth-dns --kubeconfig --listen 127.0.0.53:53` (the small DNS program built beside
#   BERTH_BIN; `berth dns` when there is none, or with DNS_BIN=multi), once serving, the same
#   (goal < 20 MB);
#   then RYW times: Service created -> its A record answered, deleted -> NXDOMAIN, p50/p99
#   over RYW Services (goal p99 < 10 ms).
# Memory is read SETTLE seconds after each component is synced. MB here is 10^6 bytes, as the
# goals are written; MiB are also printed.
#   With `list` in PARTS: the server's RSS, LISTS (10) LISTs of every Service, p50/min/max, then
#   (unless SELECTOR=0) as many with a label selector and with a field selector, and the server's RSS again.
# Env: SERVICES=10000 RYW=200 SETTLE=3 PARTS="proxy dns" (which components to start; or "list") BERTH_BIN=<release build here> KEEP=1 (keep logs)
#      DNS_BIN=FILE: the DNS program to measure (DNS_BIN=multi: `$BERTH_BIN dns`).
#      SMAPS=1: also where the DNS's resident memory is (scripts/smaps-summary.py: binary, heap, stacks).
#      HOLD=SECONDS: keep everything running that long at the end (to inspect the DNS).
#      SERVER_ENV / PROXY_ENV / DNS_ENV: extra environment for each process (e.g. "MALLOC_ARENA_MAX=2").
# Needs (Debian): iproute2 nftables python3 python3-yaml (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES="${SERVICES:-10000}"; RYW="${RYW:-200}"; SETTLE="${SETTLE:-3}"; PARTS="${PARTS:-proxy dns}"
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespace, nftables)" >&2; exit 1; }
for c in ip nsenter nft python3 timeout; do
    command -v "$c" >/dev/null || { echo "missing $c (see scripts/deps.sh)" >&2; exit 1; }
done
python3 -c 'import yaml' || { echo "missing python3-yaml (see scripts/deps.sh)" >&2; exit 1; }
if [ -z "${BERTH_BIN:-}" ]; then
    cargo build --release -p berth --bins >&2
    BERTH_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/berth"
fi
BERTH_BIN=$(realpath "$BERTH_BIN")
dns_cmd=("$BERTH_BIN" dns)
if [ "${DNS_BIN:-}" != multi ] && [ -x "${DNS_BIN:-$(dirname "$BERTH_BIN")/berth-dns}" ]; then
    dns_cmd=("$(realpath "${DNS_BIN:-$(dirname "$BERTH_BIN")/berth-dns}")")
fi
ns=bfp$$
run=$(mktemp -d /tmp/berth-bench-footprint.XXXXXX)
pids=()
cleanup() {
    set +e
    local p i
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "kept $run" >&2 || rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
in_ns() { nsenter --net="/run/netns/$ns" -- "$@"; }
wait_log() { # file pattern seconds pid
    local i
    for i in $(seq $(($3 * 10))); do
        grep -q "$2" "$1" && return 0
        kill -0 "$4" 2>/dev/null || break
        sleep 0.1
    done
    echo "no '$2' in $1:" >&2; tail -20 "$1" >&2; exit 1
}
kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
pss() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup"; }
mem() { # name pid goal_mb -> one line; also into $run/results
    local rss hwm p anon file
    rss=$(kib "$2" VmRSS); hwm=$(kib "$2" VmHWM); p=$(pss "$2")
    anon=$(kib "$2" RssAnon); file=$(kib "$2" RssFile)
    python3 - "$1" "$rss" "$hwm" "$p" "$anon" "$file" "$3" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF' | tee -a "$run/results"
import sys
name, rss, hwm, pss, anon, file = sys.argv[1], *map(int, sys.argv[2:7])
goal, load = float(sys.argv[7]), sys.argv[8]
mb = lambda k: k * 1024 / 1e6
print(f"{name:6} RSS {mb(rss):6.1f} MB ({rss / 1024:.1f} MiB; heap and stacks {mb(anon):.1f}, binary"
      f" and libraries {mb(file):.1f})  peak (VmHWM) {mb(hwm):6.1f} MB  PSS {mb(pss):6.1f} MB"
      f"  goal < {goal:.0f} MB  ratio {mb(rss) / goal:.2f}  load {load}")
EOF
}

ip netns add "$ns"
ip -n "$ns" link set lo up
# Started directly so that $! is berth's own PID (nsenter execs it).
# shellcheck disable=SC2086 # SERVER_ENV is a list of VAR=value words
nsenter --net="/run/netns/$ns" -- env ${SERVER_ENV:-} "$BERTH_BIN" server --no-node --bind 127.0.0.1:6443 \
    --data-dir "$run/data" >"$run/server.log" 2>&1 &
pids+=($!); server=$!
wait_log "$run/server.log" 'ready at' 30 "$server"
kc="$run/data/kubeconfig"
in_ns python3 scripts/bench-footprint.py load "$kc" "$SERVICES"

echo "# $SERVICES Services x 5 endpoints; berth $("$BERTH_BIN" --version 2>/dev/null | head -1)" \
    | tee "$run/results"
part() { [[ " $PARTS " == *" $1 "* ]]; }
if part list; then
    sleep "$SETTLE"
    mem server "$server" 1000 | sed 's/^/before LISTs: /'
    echo "server LISTs, load $(cut -d' ' -f1-3 /proc/loadavg):" | tee -a "$run/results"
    in_ns python3 scripts/bench-footprint.py lists "$kc" "${LISTS:-10}" "${SELECTOR:-1}" | tee -a "$run/results"
    mem server "$server" 1000 | sed 's/^/after LISTs: /'
fi
if part proxy; then
# shellcheck disable=SC2086 # PROXY_ENV is a list of VAR=value words
nsenter --net="/run/netns/$ns" -- env ${PROXY_ENV:-} "$BERTH_BIN" proxy --kubeconfig "$kc" \
    --hostname-override bench >"$run/proxy.log" 2>&1 &
pids+=($!); proxy=$!
t0=$(date +%s%N)
wait_log "$run/proxy.log" 'synced' 60 "$proxy"
echo "proxy: first full sync in $(( ($(date +%s%N) - t0) / 1000000 )) ms from exec" | tee -a "$run/results"
elems=$(in_ns nft -j list table ip berth | python3 -c '
import json, sys
d = json.load(sys.stdin)["nftables"]
print(sum(len(x.get(k, {}).get("elem", []) or []) for x in d for k in ("map", "set")))')
echo "proxy: table ip berth holds $elems set/map elements" | tee -a "$run/results"
sleep "$SETTLE"
mem proxy "$proxy" 50
fi
if part dns; then

# shellcheck disable=SC2086
nsenter --net="/run/netns/$ns" -- env ${DNS_ENV:-} "${dns_cmd[@]}" --kubeconfig "$kc" \
    --listen 127.0.0.53:53 --upstream 127.0.0.1:9 >"$run/dns.log" 2>&1 &
pids+=($!); dns=$!
wait_log "$run/dns.log" 'cluster DNS serving' 60 "$dns"
sleep "$SETTLE"
echo "dns: ${dns_cmd[*]}" | tee -a "$run/results"
mem dns "$dns" 20
[ -n "${SMAPS:-}" ] && python3 scripts/smaps-summary.py "$dns" | tee -a "$run/results"
mem server "$server" 1000 >/dev/null

echo "read-your-writes over $RYW Services ($SERVICES present), load $(cut -d' ' -f1-3 /proc/loadavg):" \
    | tee -a "$run/results"
in_ns python3 scripts/bench-footprint.py ryw "$kc" 127.0.0.53:53 "$RYW" | tee -a "$run/results"
mem dns "$dns" 20 | sed 's/^/after RYW: /'
if [ -n "${HOLD:-}" ]; then echo "holding $HOLD s (dns PID $dns)" >&2; sleep "$HOLD"; fi
fi
echo "== summary"
cat "$run/results"
