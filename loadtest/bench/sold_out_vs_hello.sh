#!/usr/bin/env bash
# Sold-out path of the gateway against a hello-world may_minihttp server, same load
# tool (wrk), same machine, one run. Prints both rates and their ratio.
#   loadtest/bench/sold_out_vs_hello.sh [seconds=5] [connections=64]
# Ports (to run beside another bench): BENCH_SOLD_OUT_PORT [18090] and
# BENCH_SOLD_OUT_ADMIN_PORT [18092] the gateway's listeners, BENCH_HELLO_PORT [18091].
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SECS="${1:-5}"; CONNS="${2:-64}"
cd "$ROOT"
command -v wrk >/dev/null || { echo "wrk is missing: run ./dev setup (as root) to install it" >&2; exit 1; }
cargo build --release -q -p stackctl -p gateway --bins --example hello
./dev up >/dev/null 2>&1 || target/release/stackctl up >&2 || { echo "the local stack did not come up" >&2; exit 1; }
source <(target/release/stackctl env | sed 's/^/export /')
GW_PORT=${BENCH_SOLD_OUT_PORT:-18090}; HELLO_PORT=${BENCH_HELLO_PORT:-18091}; GW_ADMIN_PORT=${BENCH_SOLD_OUT_ADMIN_PORT:-18092}
SECKILL_LISTEN=127.0.0.1:$GW_PORT SECKILL_INTERNAL_LISTEN=127.0.0.1:$GW_ADMIN_PORT SECKILL_LOG=warn SECKILL_IP_RPS=100000000 SECKILL_IP_BURST=100000000 SECKILL_MAX_CONNECTIONS_PER_IP=0 \
  SECKILL_GLOBAL_RPS=100000000 SECKILL_GLOBAL_BURST=100000000 SECKILL_USER_RPS=100000000 SECKILL_USER_BURST=100000000 \
  SECKILL_SOLD_OUT_RECHECK_MS=600000 SECKILL_DEV_INSECURE=1 SECKILL_AUDIT_LOG=.run/bench-audit.jsonl target/release/gateway &
GW=$!
target/release/examples/hello 127.0.0.1:$HELLO_PORT &
HELLO=$!
trap 'kill $GW $HELLO 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf localhost:$GW_PORT/readyz >/dev/null && break; sleep 0.1; done
curl -sf localhost:$GW_PORT/readyz >/dev/null || { echo "gateway on :$GW_PORT not ready in 10 s" >&2; exit 1; }
SALE="bench_$(date +%s%N)"; NOW=$(date +%s%3N)
A="Authorization: Bearer dev-admin-token-change-me"
curl -sf -XPOST -H "$A" localhost:$GW_ADMIN_PORT/admin/sales -d "{\"sale\":\"$SALE\",\"stock\":1,\"start_ms\":$((NOW-1000)),\"end_ms\":$((NOW+3600000))}" >/dev/null
T="Ticket $(target/release/gateway mint --user 1)"
TOK=$(curl -sf -XPOST -H "Authorization: $T" localhost:$GW_PORT/v1/sales/$SALE/tokens | sed 's/.*"token":"\([0-9a-f]*\)".*/\1/')
curl -sf -XPOST -H "Authorization: $T" localhost:$GW_PORT/v1/sales/$SALE/orders -d "{\"token\":\"$TOK\"}" >/dev/null
T2="Ticket $(target/release/gateway mint --user 2)"
test "$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H "Authorization: $T2" localhost:$GW_PORT/v1/sales/$SALE/tokens)" = 410
LUA=$(mktemp); echo 'wrk.method = "POST"' >"$LUA"
rate() { wrk -t1 -c"$CONNS" -d"${SECS}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
HELLO_RPS=$(rate http://127.0.0.1:$HELLO_PORT/)
SOLD_RPS=$(rate -s "$LUA" -H "Authorization: $T2" http://127.0.0.1:$GW_PORT/v1/sales/$SALE/tokens)
SHED=$(curl -s localhost:$GW_ADMIN_PORT/metrics | awk '/^seckill_sold_out_shed_total/ {print $2}')
echo "wrk -t1 -c$CONNS -d${SECS}s on $(nproc) cores"
echo "hello-world may_minihttp : $HELLO_RPS requests/s"
echo "gateway sold-out path    : $SOLD_RPS requests/s (ticket verify + limits + 410 from memory; $SHED shed)"
python3 -c "print(f'ratio sold-out / hello    : {float($SOLD_RPS)/float($HELLO_RPS):.2f}')"
