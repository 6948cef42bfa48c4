#!/usr/bin/env bash
# bench-dataplane.sh - a pod reaching another through a ClusterIP vs directly at its pod IP, with
# SERVICES x 5 endpoints loaded (default 10,000): berth's table beside kube-proxy's nftables
# shape, in one run, on the shared benchmark's topology and load generators.
#
# From ../shared/bench: netns_topology.sh (pod A -> node -> pod B in network namespaces made here,
# deleted at the end), lib.sh (results under /tmp/berth-perf, cleanup) and dataplane.sh's method:
# nginx and iperf3 -s in pod B; from pod A, wrk -t1 -c$WRK_CONNS with 'Connection: close' (new
# connections/s) and iperf3 -P1 (Gbit/s) to pod B's IP (direct) and to ClusterIP 10.96.0.10
# (5 endpoints, all pod B's addresses), conntrack flushed in the node before each sample. Each
# round measures direct and ClusterIP back to back (order alternating), so the per-round ratio
# sees the same machine load on both sides; figures are medians over ROUNDS rounds. Two node
# states, one after the other:
#   kube-proxy : gen_kube_proxy_rules.py's full.nft (table ip kube-proxy) through nft -f
#   berth      : table ip berth as berth-proxy's full sync programs it for the same Services
#                (crates/proxy/benches/dataplane.rs --here, run inside the node netns)
# Prints direct, ClusterIP and the ratio for each (goal for berth: ClusterIP >= 0.97 of direct).
# Traffic only between the namespaces this script makes.
# Env: SERVICES=10000 ROUNDS=7 DUR=3 WRK_CONNS=32 TOPO=routed|bridge (netns_topology.sh)
#      BENCH_DIR=<repo>/../shared/bench  CARGO_TARGET_DIR as usual.
# Needs (Debian): nftables iproute2 iperf3 wrk nginx-light conntrack python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/../shared/bench}"
SERVICES="${SERVICES:-10000}"; ROUNDS="${ROUNDS:-7}"; DUR="${DUR:-3}"; WRK_CONNS="${WRK_CONNS:-32}"
export SERVER_TW_BUCKETS="${SERVER_TW_BUCKETS-0}" # as dataplane.sh: no TIME_WAIT in pod B
source "$BENCH_DIR/lib.sh"
source "$BENCH_DIR/netns_topology.sh"
need_root
need_cmds ip nft iperf3 wrk nginx conntrack python3 timeout cargo
CIP=10.96.0.10

echo "building berth's programmer: cargo bench -p berth-proxy --bench dataplane" >&2
PROGRAMMER=$(cd "$ROOT" && nice cargo bench -p berth-proxy --bench dataplane --no-run \
  --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "dataplane" and m.get("executable"):
        print(m["executable"])')
[ -x "$PROGRAMMER" ] || { echo "could not build crates/proxy/benches/dataplane.rs" >&2; exit 1; }

init_out "bench-dataplane-$TOPO"
RUN="$OUT/run"; mkdir -p "$RUN"
RULES="$RUN/rules"
python3 "$BENCH_DIR/gen_kube_proxy_rules.py" --services "$SERVICES" --endpoints 5 --dir "$RULES" >&2

topo_up
cat > "$RUN/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $RUN/ngx-body; proxy_temp_path $RUN/ngx-proxy;
  fastcgi_temp_path $RUN/ngx-fcgi; uwsgi_temp_path $RUN/ngx-uwsgi; scgi_temp_path $RUN/ngx-scgi;
  keepalive_requests 1000000;
  server { listen 80 backlog=16384; location / { return 200 "ok\n"; } }
}
NGINX
in_b nginx -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log" &
defer stop_pid $!
in_b iperf3 -s -p 5201 >"$RUN/iperf3-server.log" 2>&1 &
defer stop_pid $!
sleep 0.5
in_a timeout 5 curl -sf "http://$POD_B_IP/" >/dev/null

ct_flush() { in_node conntrack -F >/dev/null 2>&1 || true; sleep 0.5; }
iperf_gbps() { # target
  in_a timeout $((DUR + 20)) iperf3 -c "$1" -p 5201 -t "$DUR" -P 1 -J --connect-timeout 3000 \
    > "$RUN/iperf-last.json" 2>&1 || { echo nan; return; }
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' \
    "$RUN/iperf-last.json" 2>/dev/null || echo nan
}
wrk_conn_s() { # target
  in_a timeout $((DUR + 20)) wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" --timeout 2s -H 'Connection: close' \
    "http://$1/" > "$RUN/wrk-last.txt" 2>&1 || true
  cat "$RUN/wrk-last.txt" >> "$RUN/wrk-all.txt"
  awk '/Requests\/sec/{print int($2)}' "$RUN/wrk-last.txt" | grep . || echo nan
}
verify_dnat() { # state: 50 connections to the ClusterIP must spread over pod B's addresses
  ct_flush
  in_a python3 -c '
import socket, sys
for _ in range(50):
    s = socket.create_connection((sys.argv[1], 80), timeout=2)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n"); s.recv(100); s.close()' "$CIP"
  local spread
  spread=$(in_node conntrack -L -p tcp --orig-dst "$CIP" 2>/dev/null \
    | grep -o 'src=10.244.0.[3-7] dst=10.244.0.2' | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
  echo "$1: DNAT spread over endpoints (50 conns): $spread" | tee -a "$RUN/verify.log" >&2
  [ "$(wc -w <<<"$spread")" -ge 2 ] || { echo "$1: ClusterIP traffic was not balanced" >&2; exit 1; }
}
sample() { # state measure target -> value (also appended to samples.txt)
  ct_flush
  local v
  if [ "$2" = gbps ]; then v=$(iperf_gbps "$3"); else v=$(wrk_conn_s "$3"); fi
  echo "$1 $3 $2 $v" >> "$RUN/samples.txt"
  echo "$v"
}
run_rounds() { # state
  local r m d c
  for r in $(seq "$ROUNDS"); do
    for m in conns gbps; do
      if ((r % 2)); then d=$(sample "$1" "$m" "$POD_B_IP"); c=$(sample "$1" "$m" "$CIP")
      else c=$(sample "$1" "$m" "$CIP"); d=$(sample "$1" "$m" "$POD_B_IP"); fi
      awk -v s="$1" -v m="$m" -v c="$c" -v d="$d" \
        'BEGIN{if (d > 0 && c > 0) printf "%s %s %.4f\n", s, m, c / d}' >> "$RUN/ratios.txt"
      echo "$(date -u +%T) $1 round $r $m: direct=$d clusterip=$c load=$(loadavg)" >&2
    done
  done
}
med() { awk -v s="$1" -v t="$2" -v m="$3" '$1==s && $2==t && $3==m {print $4}' "$RUN/samples.txt" | grep -v nan | median; }
ratio() { awk -v s="$1" -v m="$2" '$1==s && $2==m {print $3}' "$RUN/ratios.txt" | median; }
ratios() { awk -v s="$1" -v m="$2" '$1==s && $2==m {print $3}' "$RUN/ratios.txt" | sort -g | tr '\n' ' '; }

# ---- kube-proxy's shape
defer "in_node nft delete table ip kube-proxy"
t0=$(date +%s%N); in_node nft -f "$RULES/full.nft"; t1=$(date +%s%N)
echo "kube-proxy: nft -f full.nft ($SERVICES x 5 + the test Service): $(( (t1 - t0) / 1000000 )) ms" \
  | tee -a "$RUN/program.log" >&2
verify_dnat kube-proxy
run_rounds kube-proxy
in_node nft delete table ip kube-proxy

# ---- berth
defer "in_node nft delete table ip berth"
in_node env BERTH_BENCH_SERVICES="$SERVICES" "$PROGRAMMER" --here | tee -a "$RUN/program.log" >&2
verify_dnat berth
run_rounds berth
in_node nft delete table ip berth

args=("$SERVICES" "$ROUNDS" "$DUR" "$TOPO" "$(cut -d' ' -f1-3 /proc/loadavg)")
for m in conns gbps; do
  for s in kube-proxy berth; do
    result "dp/$TOPO/$SERVICES/$s direct $m" "direct pod IP ($s table loaded)" "$(med "$s" "$POD_B_IP" "$m")" "bench-dataplane.sh"
    result "dp/$TOPO/$SERVICES/$s clusterip $m" "ClusterIP ($s table)" "$(med "$s" "$CIP" "$m")" "bench-dataplane.sh"
    result "dp/$TOPO/$SERVICES/$s ratio $m" "ClusterIP / direct per round" "$(ratio "$s" "$m") [$(ratios "$s" "$m")]" "bench-dataplane.sh"
    args+=("$(med "$s" "$POD_B_IP" "$m")" "$(med "$s" "$CIP" "$m")" "$(ratio "$s" "$m")")
  done
done
python3 -c '
import sys
n, rounds, dur, topo, load = sys.argv[1:6]
v = [float(x) for x in sys.argv[6:]]
rows = [("new connections/s (wrk, Connection: close)", v[0:6], "{:.0f}"),
        ("throughput Gbit/s (iperf3 -P1)", v[6:12], "{:.2f}")]
print(f"pod A -> pod B, {n} Services x 5 endpoints loaded, TOPO={topo}, {rounds} rounds of {dur} s; "
      f"medians, ratio = median of per-round ClusterIP/direct; loadavg at end {load}")
print("%-44s %43s %34s" % ("measure", "kube-proxy shape: direct  ClusterIP  ratio", "berth: direct  ClusterIP  ratio"))
met = True
for name, (kd, kc, kr, bd, bc, br), fmt in rows:
    met = met and br >= 0.97
    print(f"{name:44} {fmt.format(kd):>26} {fmt.format(kc):>10} {kr:>6.3f} "
          f"{fmt.format(bd):>17} {fmt.format(bc):>10} {br:>6.3f}")
print("goal for berth, ClusterIP >= 0.97 of direct: " + ("met" if met else "NOT met"))
' "${args[@]}"
