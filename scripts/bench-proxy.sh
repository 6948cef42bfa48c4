#!/usr/bin/env bash
# bench-proxy.sh - berth-proxy beside kube-proxy's nftables shape, in one run, for SERVICES x 5
# endpoints (default 10,000): the initial load from an empty table and one endpoint change
# (p50/p99).
#
# Reference: the shared anchor's kube-proxy-shaped ruleset (gen_kube_proxy_rules.py) loaded with
# `nft -f` (time_nft.py: wall time of the whole nft process), full.nft once and the
# chg-ep-a/chg-ep-b pair REPS times each. berth: crates/proxy/benches/load.rs (desired + diff +
# one netlink batch for the initial load; tracker update + netlink batch per endpoint change, 200
# changes). Each side runs in a network namespace of its own, deleted at the end; no traffic.
# Env: SERVICES=10000 REPS=100 BENCH_DIR=<repo>/../shared/bench CARGO_TARGET_DIR as usual.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/../shared/bench}"
SERVICES="${SERVICES:-10000}"
REPS="${REPS:-100}"
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces, nf_tables)" >&2; exit 1; }
for c in ip nft python3 cargo; do
  command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 1; }
done

NS="berth-bpx-$$"
WORK="$(mktemp -d)"
cleanup() {
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"

field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo "reference: kube-proxy's nftables shape through nft -f ($SERVICES x 5)" >&2
python3 "$BENCH_DIR/gen_kube_proxy_rules.py" --services "$SERVICES" --endpoints 5 \
  --dir "$WORK/rules" >&2
full=$(ip netns exec "$NS" python3 "$BENCH_DIR/time_nft.py" 1 "$WORK/rules/full.nft")
chg=$(ip netns exec "$NS" python3 "$BENCH_DIR/time_nft.py" "$REPS" \
  "$WORK/rules/chg-ep-a.nft" "$WORK/rules/chg-ep-b.nft" | head -1)
ip netns exec "$NS" nft delete table ip kube-proxy
ref_full=$(field "$full" p50)
ref_p50=$(field "$chg" p50)
ref_p99=$(field "$chg" p99)

echo "berth-proxy: cargo bench -p berth-proxy --bench load ($SERVICES x 5)" >&2
(cd "$ROOT" && nice cargo bench -p berth-proxy --bench load --no-run) >&2
line=$(cd "$ROOT" && BERTH_BENCH_SERVICES="$SERVICES" cargo bench -p berth-proxy --bench load 2>/dev/null \
  | tee /dev/stderr | grep '^BENCH ')
val() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }

python3 - "$SERVICES" "$REPS" "$ref_full" "$ref_p50" "$ref_p99" \
  "$(val initial_ms)" "$(val change_p50_ms)" "$(val change_p99_ms)" <<'EOF'
import sys
n, reps = sys.argv[1], sys.argv[2]
ref = [float(x) for x in sys.argv[3:6]]
berth = [float(x) for x in sys.argv[6:9]]
rows = [f"initial load, {n} x 5", "one endpoint change p50", "one endpoint change p99"]
print(f"{'measure':28} {'kube-proxy shape (nft -f)':>26} {'berth-proxy':>14} {'ratio':>10}")
for row, r, b in zip(rows, ref, berth):
    print(f"{row:28} {r:>23.2f} ms {b:>11.3f} ms {r / b:>9.0f}x")
print(f"(reference: nft -f wall time, full.nft once, chg-ep-a/-b {reps} times each; "
      f"berth: benches/load.rs, 200 changes; ratio = reference / berth)")
EOF
