#!/usr/bin/env bash
# deploy/image/smoke.sh [IMAGE] — the image against the running local stack (`./dev up`;
# the same SECKILL_RUN_DIR and SECKILL_*_PORT as it was started with), as the Helm chart
# runs it: read-only root file system, uid 10001, a volume for /var/lib/seckill, a tmpfs
# for /tmp and nothing else writable.
#   1. `order-writer migrate` in a container (the chart's hook Job), then an order-writer
#      and a gateway container (--network host, on free ports), each on topics and a
#      consumer group of this test (image-smoke-orders, created by `stackctl up`), so no
#      other writer of the stack takes its orders;
#   2. the gateway's /readyz within 60 s (else its log, and a failure);
#   3. a sale of 5 units through the admin API, 8 buyers (tickets minted by `gateway mint`
#      in the gateway's container) each with a purchase token, then their 8 orders at once:
#      exactly 5 answered 202 and 3 answered 410 sold_out;
#   4. PostgreSQL holds exactly the 5 accepted order ids (within 60 s), the audit log in
#      the volume records the sale, the sale's remaining stock is 0;
#   5. SIGTERM: each container exits by itself (a gateway drains) within 30 s.
# The containers are removed on exit whatever happens; their logs stay in
# .run/image/smoke-<pid>/ when the test fails. IMAGE defaults to the tag build.sh built
# last (.run/image/last-tag), else localhost/seckill:latest. The stack's addresses come
# from `stackctl env`; SECKILL_REDIS_URL, SECKILL_KAFKA_BROKERS and SECKILL_DATABASE_URL
# set in the environment win. The TLS profile is not supported (its files are host paths).
set -euo pipefail

# shellcheck source=deploy/image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IMAGE_ROOT"

image="${1:-}"
if [[ -z $image ]]; then
  image=$(cat "$IMAGE_RUN/last-tag" 2>/dev/null || echo "$IMAGE_REPO:latest")
fi
[[ ${SECKILL_STACK_TLS:-} == 1 ]] && die "the TLS profile is not supported: run it on the plain stack"
command -v curl >/dev/null || die "curl is missing (./dev setup)"
command -v psql >/dev/null || die "psql is missing (./dev setup)"
command -v python3 >/dev/null || die "python3 is missing (./dev setup)"
podman_conf
podman image exists "$image" || die "no image $image (./dev image builds it)"
stackctl="${CARGO_TARGET_DIR:-$IMAGE_ROOT/target}/release/stackctl"
[[ -x $stackctl ]] || die "$stackctl is missing (cargo build --release -p stackctl)"
"$stackctl" status >/dev/null || die "the local stack is not up: ./dev up (with the same SECKILL_RUN_DIR and ports)"

started=$(date +%s)
id="smoke-$$"
work="$IMAGE_RUN/$id"
mkdir -p "$work/gateway"
# The volume is the gateway's and must be writable by its user only.
chown 10001:10001 "$work/gateway"
topic="image-smoke-orders"
group="image-smoke-writer"
cluster="image_smoke_$$"
sale="image_smoke_$(date +%s)_$$"
gw="seckill-$id-gateway"
wr="seckill-$id-writer"
admin_token="${SECKILL_ADMIN_TOKEN:-dev-admin-token-change-me}"

ok=0
names=()
cleanup() {
  local n
  for n in "${names[@]}"; do
    podman rm -f -t 0 "$n" >/dev/null 2>&1 || true
  done
  if ((ok)); then
    rm -rf "$work"
  else
    log "FAILED; logs and the gateway's volume kept in $work"
  fi
}
trap cleanup EXIT

fail() {
  local n
  log "FAILED: $*"
  for n in "${names[@]}"; do
    printf -- '--- %s, podman logs (last 20 lines):\n' "$n" >&2
    # The k8s-file log outlives a removed (--rm) container: time, stream, F (a full line)
    # or P (part of one), text.
    awk '{ tag = $3; sub(/^[^ ]+ [^ ]+ [^ ]+ ?/, ""); printf "%s%s", $0, (tag == "P" ? "" : "\n") }' \
      "$work/$n.log" 2>/dev/null | tail -n 20 | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
  done
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Topics of this test (an existing topic is kept), then the stack's addresses.
SECKILL_TOPICS="${SECKILL_TOPICS:-orders:8 orders-dlq:1} $topic:2 $topic-dlq:1" "$stackctl" up >/dev/null 2>"$work/stackctl.log" \
  || { cat "$work/stackctl.log" >&2; die "stackctl up (the test's topics) failed"; }
env_args=()
while IFS='=' read -r key value; do
  [[ $key == SECKILL_* ]] || continue
  [[ -n ${!key:-} ]] && value="${!key}"
  env_args+=(-e "$key=$value")
  printf -v "$key" '%s' "$value"
done < <("$stackctl" env)
[[ -n ${SECKILL_DATABASE_URL:-} ]] || die "stackctl env names no SECKILL_DATABASE_URL"

port=$(free_port)
internal=$(free_port)
metrics=$(free_port)
while [[ $internal == "$port" ]]; do internal=$(free_port); done
while [[ $metrics == "$port" || $metrics == "$internal" ]]; do metrics=$(free_port); done
GW="http://127.0.0.1:$port"
GW_ADMIN="http://127.0.0.1:$internal"
WRITER="http://127.0.0.1:$metrics"

# As the chart runs them: read-only root, only /tmp as a tmpfs (podman's --read-only
# would add /run and /var/tmp), uid 10001, host network (traffic stays on 127.0.0.1).
run_opts=(--network host --read-only --read-only-tmpfs=false --tmpfs "/tmp:size=64m"
  --user 10001:10001 --log-driver k8s-file "${env_args[@]}"
  -e SECKILL_ORDERS_TOPIC="$topic" -e "SECKILL_LOG=info,may=warn")
writer_opts=(--entrypoint /usr/local/bin/order-writer
  -e SECKILL_DLQ_TOPIC="$topic-dlq" -e SECKILL_GROUP_ID="$group")

log "image $image, stack $SECKILL_REDIS_URL $SECKILL_KAFKA_BROKERS $SECKILL_DATABASE_URL"
names+=("$wr-migrate")
podman run --rm --name "$wr-migrate" --log-opt path="$work/$wr-migrate.log" "${run_opts[@]}" \
  "${writer_opts[@]}" "$image" migrate >/dev/null 2>&1 || fail "order-writer migrate failed"
log "order-writer migrate: done"

names+=("$wr" "$gw")
podman run --rm -d --name "$wr" --log-opt path="$work/$wr.log" "${run_opts[@]}" "${writer_opts[@]}" \
  -e SECKILL_MIGRATE=false -e SECKILL_METRICS_LISTEN="127.0.0.1:$metrics" \
  "$image" >/dev/null || fail "the order-writer container did not start"
podman run --rm -d --name "$gw" --log-opt path="$work/$gw.log" "${run_opts[@]}" \
  -v "$work/gateway:/var/lib/seckill" \
  -e SECKILL_LISTEN="127.0.0.1:$port" -e SECKILL_INTERNAL_LISTEN="127.0.0.1:$internal" \
  -e SECKILL_CLUSTER="$cluster" -e SECKILL_DEV_INSECURE=1 \
  "$image" serve >/dev/null || fail "the gateway container did not start"

# Bounded waits: the gateway ready, the writer serving its health.
wait_for() { # what url seconds
  local deadline=$(($(date +%s) + $3))
  until curl -sf -m 2 -o /dev/null "$2"; do
    (($(date +%s) < deadline)) || fail "$1 not answering $2 within $3 s"
    podman container exists "${1%% *}" || fail "$1 exited"
    sleep 0.5
  done
}
wait_for "$gw ready" "$GW/readyz" 60
wait_for "$wr healthy" "$WRITER/healthz" 60
log "gateway ready on $GW (internal $GW_ADMIN), writer on $WRITER, in $(($(date +%s) - started)) s"

units=5 buyers=8
now=$(($(date +%s) * 1000))
code=$(curl -s -m 10 -o "$work/sale.json" -w '%{http_code}' -XPOST \
  -H "Authorization: Bearer $admin_token" "$GW_ADMIN/admin/sales" \
  -d "{\"sale\":\"$sale\",\"stock\":$units,\"start_ms\":$((now - 1000)),\"end_ms\":$((now + 600000))}") || true
[[ $code == 20[01] ]] || fail "POST /admin/sales answered $code: $(cat "$work/sale.json" 2>/dev/null)"

json() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
declare -A ticket token
for u in $(seq 1 $buyers); do
  ticket[$u]=$(podman exec "$gw" gateway mint --user "$u") || fail "gateway mint --user $u failed"
  code=$(curl -s -m 10 -o "$work/token-$u.json" -w '%{http_code}' -XPOST \
    -H "Authorization: Ticket ${ticket[$u]}" "$GW/v1/sales/$sale/tokens") || true
  [[ $code == 201 ]] || fail "buyer $u: POST /tokens answered $code: $(cat "$work/token-$u.json" 2>/dev/null)"
  token[$u]=$(json "$work/token-$u.json" token)
done
# Every buyer orders at once; each request bounded.
for u in $(seq 1 $buyers); do
  curl -s -m 15 -o "$work/order-$u.json" -w '%{http_code}' -XPOST \
    -H "Authorization: Ticket ${ticket[$u]}" -H 'Content-Type: application/json' \
    "$GW/v1/sales/$sale/orders" -d "{\"token\":\"${token[$u]}\"}" >"$work/order-$u.code" &
done
wait
accepted=() refused=0 other=()
for u in $(seq 1 $buyers); do
  code=$(cat "$work/order-$u.code")
  if [[ $code == 202 ]]; then
    accepted+=("$(json "$work/order-$u.json" order_id)")
  elif [[ $code == 410 && $(json "$work/order-$u.json" error) == sold_out ]]; then
    refused=$((refused + 1))
  else
    other+=("buyer $u: $code $(cat "$work/order-$u.json" 2>/dev/null)")
  fi
done
((${#other[@]} == 0)) || fail "unexpected answers: ${other[*]}"
((${#accepted[@]} == units && refused == buyers - units)) \
  || fail "expected $units orders 202 and $((buyers - units)) 410 sold_out, got ${#accepted[@]} and $refused"
log "orders: ${#accepted[@]} answered 202, $refused answered 410 sold_out"

expected=$(printf '%s\n' "${accepted[@]}" | sort)
deadline=$(($(date +%s) + 60))
while :; do
  rows=$(psql "$SECKILL_DATABASE_URL" -X -At -v ON_ERROR_STOP=1 \
    -c "SELECT order_id FROM orders WHERE sale = '$sale' ORDER BY order_id" 2>"$work/psql.err") \
    || fail "psql failed: $(cat "$work/psql.err")"
  rows=$(sort <<<"$rows")
  [[ $rows == "$expected" ]] && break
  podman container exists "$wr" || fail "$wr exited"
  (($(date +%s) < deadline)) || fail "PostgreSQL holds [${rows//$'\n'/ }] for $sale, not the accepted [${expected//$'\n'/ }] (60 s)"
  sleep 0.5
done
log "PostgreSQL: exactly the $units accepted orders of $sale"

grep "\"create_sale\"" "$work/gateway/audit.jsonl" 2>/dev/null | grep -q "\"$sale\"" \
  || fail "the audit log in the volume ($work/gateway/audit.jsonl) does not record the sale"
code=$(curl -s -m 10 -o "$work/state.json" -w '%{http_code}' "$GW/v1/sales/$sale") || true
[[ $code == 200 && $(json "$work/state.json" remaining) == 0 ]] \
  || fail "GET /v1/sales/$sale answered $code: $(cat "$work/state.json" 2>/dev/null)"
log "audit log in the volume records the sale; remaining stock 0"

# SIGTERM, as Kubernetes stops a pod: each exits by itself (podman would kill it after 30 s).
for n in "$gw" "$wr"; do
  t0=$(date +%s)
  out=$(podman stop -t 30 "$n" 2>&1) || fail "podman stop $n: $out"
  [[ $out != *SIGKILL* ]] || fail "$n did not exit on SIGTERM within 30 s"
  log "$n stopped on SIGTERM in $(($(date +%s) - t0)) s"
done

ok=1
log "image smoke: passed in $(($(date +%s) - started)) s ($image)"
