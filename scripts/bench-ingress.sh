#!/usr/bin/env bash
# bench-ingress.sh - requests/s and p99 latency through berth's Ingress controller to a whoami
# pod, beside Debian's nginx(-light) configured as the same reverse proxy to the same pod, in
# one run, keep-alive and not.
#
# Topology (everything in network namespaces made here, deleted on exit):
#   netns HOST (made here, plays the machine): `berth server --node-netns NODE` and wrk
#   netns NODE (berth makes it): berth's ingress on NODE_IP:80 and nginx on NODE_IP:8080,
#   one whoami pod (image berth/whoami) on the node's bridge.
# nginx: worker_processes = WORKERS, proxy_pass to the pod's IP with an upstream keepalive
# pool, HTTP/1.1 upstream, the same Host routing (server_name bench.example.com, 404 for other
# hosts) and the same X-Forwarded-* headers berth adds; its own config, pid file, temp and log
# paths in the run's temp dir (never the system service). berth's ingress runs one worker
# thread per CPU (berth_ingress::Config::workers, each its own runtime, sockets and upstream
# pool, as nginx's worker processes); WORKERS (nginx's) defaults to nproc, the same count.
# Neither proxy is pinned: on a 2-core machine wrk, the proxy and whoami share the cores
# either way, and each round measures berth and nginx back to back (order alternating), so
# both see the same machine load. Figures are medians over ROUNDS rounds.
# wrk: -t1 -c$CONNS -d${DUR}s --latency; "close" adds -H 'Connection: close' (a new TCP
# connection per request, client side; both proxies still reuse their upstream connections).
# Also the proxy's CPU time per request (user + system, from /proc): the figure least moved by
# other load on the machine. Goal: berth >= 1.0x nginx's requests/s, p99 <= 1.2x nginx's.
# Env: ROUNDS=5 DUR=5 CONNS=32 WORKERS=$(nproc) BERTH_BIN=<built here> CARGO_TARGET_DIR.
# Needs (Debian): iproute2 nftables wrk nginx-light curl kubectl (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-5}"; DUR="${DUR:-5}"; CONNS="${CONNS:-32}"; WORKERS="${WORKERS:-$(nproc)}"
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for c in ip nsenter wrk nginx curl kubectl timeout python3; do
    command -v "$c" >/dev/null || { echo "missing $c (see scripts/deps.sh)" >&2; exit 1; }
done
if [ -z "${BERTH_BIN:-}" ]; then
    cargo build --release --bin berth >&2
    BERTH_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/berth"
fi
host=bih$$
node=bin$$
run=$(mktemp -d /tmp/berth-bench-ingress.XXXXXX)
berth_pid=
nginx_pid=
cleanup() {
    set +e
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
    if [ -n "$berth_pid" ]; then
        kill "$berth_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$berth_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$berth_pid" 2>/dev/null
    fi
    in_host "$BERTH_BIN" cleanup --data-dir "$run/data" --node-netns "$node" >/dev/null 2>&1
    ip netns del "$node" 2>/dev/null
    ip netns del "$host" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "kept $run" >&2 || rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# nsenter changes only the network namespace, so the node namespace berth makes under
# /run/netns is visible here (ip netns exec would bind it in a mount namespace of its own).
in_host() { nsenter --net="/run/netns/$host" -- "$@"; }
in_node() { ip netns exec "$node" "$@"; }
k() { in_host kubectl --kubeconfig "$run/data/kubeconfig" "$@"; }

ip netns add "$host"
ip -n "$host" link set lo up
# Started directly (not through a function) so $! is berth's own PID (nsenter execs it).
nsenter --net="/run/netns/$host" -- "$BERTH_BIN" server --data-dir "$run/data" \
    --node-netns "$node" >"$run/berth.log" 2>&1 &
berth_pid=$!
for _ in $(seq 300); do grep -q 'berth: ready' "$run/berth.log" && break; sleep 0.1; done
grep -q 'berth: ready' "$run/berth.log" || { cat "$run/berth.log" >&2; exit 1; }
node_ip=$(sed -n 's/.*node namespace .* at \([0-9.]*\) .*/\1/p' "$run/berth.log" | head -1)
[ -n "$node_ip" ] || { echo "no node address in the server log" >&2; exit 1; }

k create deployment whoami --image=berth/whoami >/dev/null
k expose deployment whoami --port=80 >/dev/null
k apply -f - >/dev/null <<'YAML'
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
spec:
  rules:
  - host: bench.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: whoami
            port:
              number: 80
YAML
k rollout status deployment/whoami --timeout=60s >/dev/null
pod_ip=$(k get pods -l app=whoami -o jsonpath='{.items[0].status.podIP}')

cat >"$run/nginx.conf" <<NGINX
worker_processes $WORKERS;
daemon off;
pid $run/nginx.pid;
error_log $run/nginx-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $run/ngx-body; proxy_temp_path $run/ngx-proxy;
  fastcgi_temp_path $run/ngx-fcgi; uwsgi_temp_path $run/ngx-uwsgi; scgi_temp_path $run/ngx-scgi;
  keepalive_requests 1000000;
  upstream whoami { server $pod_ip:80; keepalive 64; keepalive_requests 1000000; }
  server { listen $node_ip:8080 default_server; return 404; }
  server {
    listen $node_ip:8080;
    server_name bench.example.com;
    location / {
      proxy_pass http://whoami;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_buffering off;
    }
  }
}
NGINX
ip netns exec "$node" nginx -c "$run/nginx.conf" -e "$run/nginx-error.log" &
nginx_pid=$!

berth_url="http://$node_ip:80/"
nginx_url="http://$node_ip:8080/"
check() { # url: both must answer through to the pod, and 404 other hosts
    local body
    for _ in $(seq 100); do
        body=$(in_host curl -s -m 2 -H 'Host: bench.example.com' "$1" || true)
        grep -q '^Hostname: whoami-' <<<"$body" && break
        sleep 0.1
    done
    grep -q '^Hostname: whoami-' <<<"$body" || { echo "no whoami answer through $1: $body" >&2; exit 1; }
    [ "$(in_host curl -s -o /dev/null -w '%{http_code}' -H 'Host: other.example.com' "$1")" = 404 ] \
        || { echo "$1 does not 404 other hosts" >&2; exit 1; }
}
check "$berth_url"
check "$nginx_url"

# CPU time (clock ticks, user + system) the proxy used: nginx's worker processes; berth's
# ingress worker threads (berth-ingress-N, where all its proxying runs), or its whole process
# (API server, controllers and node too) for a berth without them.
proxy_ticks() { # proxy
    local stats
    if [ "$1" = nginx ]; then
        stats=$(pgrep -P "$nginx_pid" | sed 's|.*|/proc/&/stat|')
    else
        stats=$(grep -l '^berth-ingress' /proc/"$berth_pid"/task/*/comm 2>/dev/null | sed 's|comm$|stat|')
        [ -n "$stats" ] || stats=/proc/$berth_pid/stat
    fi
    # The name field has no spaces here, so fields 14 and 15 are utime and stime.
    for f in $stats; do awk '{print $14 + $15}' "$f"; done | awk '{s += $1} END {print s + 0}'
}
TCK=$(getconf CLK_TCK)

# wrk's p99 in ms from its --latency distribution (units us/ms/s).
wrk_run() { # proxy mode url -> "rps p99_ms"
    local extra=() out
    [ "$2" = close ] && extra=(-H 'Connection: close')
    out=$(in_host timeout $((DUR + 20)) wrk -t1 -c"$CONNS" -d"${DUR}s" --latency --timeout 2s \
        -H 'Host: bench.example.com' "${extra[@]}" "$3" 2>&1 || true)
    printf '== %s %s\n%s\n' "$1" "$2" "$out" >>"$run/wrk-all.txt"
    awk '
        /Requests\/sec/ { rps = $2 }
        $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                      p99 = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
        /Non-2xx|Socket errors/ { bad = bad " " $0 }
        END { if (rps == "" || p99 == "") print "nan nan"; else printf "%.0f %.3f\n", rps, p99;
              if (bad != "") print "wrk reported:" bad > "/dev/stderr" }' <<<"$out"
}
: >"$run/samples.txt"
echo "berth $BERTH_BIN at $berth_url, nginx ($WORKERS workers) at $nginx_url, pod $pod_ip;" \
     "wrk -t1 -c$CONNS -d${DUR}s, $ROUNDS rounds" >&2
# Warm both (connection pools, page cache) before measuring.
wrk_run warm keepalive "$berth_url" >/dev/null 2>&1
wrk_run warm keepalive "$nginx_url" >/dev/null 2>&1
for r in $(seq "$ROUNDS"); do
    for mode in keepalive close; do
        if ((r % 2)); then order="berth nginx"; else order="nginx berth"; fi
        for p in $order; do
            url=$berth_url; [ "$p" = nginx ] && url=$nginx_url
            t0=$(proxy_ticks "$p")
            read -r rps p99 < <(wrk_run "$p" "$mode" "$url")
            t1=$(proxy_ticks "$p")
            cpu=$(awk -v t=$((t1 - t0)) -v k="$TCK" -v r="$rps" -v d="$DUR" \
                'BEGIN { if (r > 0) printf "%.1f", t / k * 1e6 / (r * d); else print "nan" }')
            echo "$p $mode $rps $p99 $cpu" >>"$run/samples.txt"
            echo "$(date -u +%T) round $r $mode $p: $rps req/s p99 $p99 ms, proxy CPU $cpu us/req," \
                 "load $(cut -d' ' -f1 /proc/loadavg)" >&2
        done
    done
done

python3 - "$run/samples.txt" "$CONNS" "$DUR" "$ROUNDS" "$WORKERS" <<'PY'
import statistics, sys
path, conns, dur, rounds, workers = sys.argv[1:]
s = {}
for line in open(path):
    p, mode, rps, p99, cpu = line.split()
    if rps != "nan":
        s.setdefault((p, mode), []).append((float(rps), float(p99), float(cpu)))
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"through the ingress to one whoami pod; wrk -t1 -c{conns}, {rounds} rounds of {dur} s; "
      f"medians; {workers} workers each; CPU = the proxy's user+system time per request "
      f"(berth: its ingress threads)")
print("%-10s %11s %11s %6s %10s %10s %6s %10s %10s" % ("mode", "berth rps", "nginx rps", "ratio",
      "berth p99", "nginx p99", "ratio", "berth CPU", "nginx CPU"))
met = True
for mode in ("keepalive", "close"):
    b, n = s.get(("berth", mode), []), s.get(("nginx", mode), [])
    (br, bp, bc), (nr, np_, nc) = ([med([x[i] for x in v]) for i in range(3)] for v in (b, n))
    rr, pr = br / nr if nr else float("nan"), bp / np_ if np_ else float("nan")
    met = met and rr >= 1.0 and pr <= 1.2
    print("%-10s %11.0f %11.0f %5.2fx %8.2fms %8.2fms %5.2fx %7.1fus %7.1fus"
          % (mode, br, nr, rr, bp, np_, pr, bc, nc))
print("goal (berth >= 1.0x nginx's req/s, p99 <= 1.2x): " + ("met" if met else "NOT met"))
PY
