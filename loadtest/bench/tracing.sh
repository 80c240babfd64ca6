#!/usr/bin/env bash
# The cost of tracing on the purchase path: a Goose `rush` at full speed (a token, then
# the order: Redis and Kafka, every 202 after its delivery report) against a gateway with
# tracing off and then on (OTLP to the stack's Jaeger, tracing_sample_ratio 0.01, the
# default), alternating, in one run; orders/s per round, the ratio of the medians
# (timings here are noisy: the ratio from one run is what compares).
#   loadtest/bench/tracing.sh [seconds=5] [rounds=3]
# Writes .run/bench/tracing-<time>/summary.md (with the spans the traced gateway
# exported and dropped); exits 1 if a round was not measured.
# Ports (defaults in brackets): BENCH_TRACING_PORT [18095], BENCH_TRACING_ADMIN_PORT [18096]
# (not step 2's: run.sh --smoke runs this while its gateway is still up).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECS="${1:-5}"
ROUNDS="${2:-3}"
OUT="$ROOT/.run/bench/tracing-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { printf '[bench-tracing] %s\n' "$*" >&2; }

cargo build --release -q -p stackctl -p gateway -p loadtest --bins
# The stack with its collector (Jaeger is built once from the Go module proxy).
SECKILL_TRACING=1 target/release/stackctl up >/dev/null
source <(target/release/stackctl env | sed 's/^/export /')
[ -n "${SECKILL_TRACING_ENDPOINT:-}" ] || { log "the stack runs no collector"; exit 1; }
ENDPOINT=$SECKILL_TRACING_ENDPOINT
GW_PORT=${BENCH_TRACING_PORT:-18095} GW_ADMIN_PORT=${BENCH_TRACING_ADMIN_PORT:-18096}
GW=
trap '[ -n "$GW" ] && kill $GW 2>/dev/null || true' EXIT

# One round: a gateway with tracing `endpoint` (empty: off), a rush of SECS seconds.
round() { # name endpoint
  local name=$1 endpoint=$2
  SECKILL_LISTEN=127.0.0.1:$GW_PORT SECKILL_INTERNAL_LISTEN=127.0.0.1:$GW_ADMIN_PORT \
    SECKILL_SPOOL_DIR="$OUT/spool" SECKILL_AUDIT_LOG="$OUT/audit.jsonl" SECKILL_DEV_INSECURE=1 \
    SECKILL_LOG=warn SECKILL_IP_RPS=100000000 SECKILL_IP_BURST=100000000 \
    SECKILL_MAX_CONNECTIONS_PER_IP=0 SECKILL_GLOBAL_RPS=100000000 SECKILL_GLOBAL_BURST=100000000 \
    SECKILL_USER_RPS=100000000 SECKILL_USER_BURST=100000000 \
    SECKILL_TRACING_ENDPOINT="$endpoint" SECKILL_TRACING_SAMPLE_RATIO=0.01 \
    target/release/gateway >"$OUT/$name-gateway.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do curl -sf "localhost:$GW_PORT/readyz" >/dev/null && break; sleep 0.1; done
  mkdir -p "$OUT/$name"
  target/release/seckill-load rush --host "http://127.0.0.1:$GW_PORT" \
    --admin-url "http://127.0.0.1:$GW_ADMIN_PORT" --units 100000000 --out "$OUT/$name" \
    -- --users 64 --increase-rate 64 --run-time "${SECS}s" --quiet >"$OUT/$name.txt" 2>&1 || true
  # The exporter sends at least once a second: its counts settle before the gateway stops.
  sleep 1.5
  curl -s "localhost:$GW_ADMIN_PORT/metrics" | grep '^seckill_trace_' >"$OUT/$name-spans.txt" || true
  kill $GW && wait $GW 2>/dev/null || true
  GW=
}

for r in $(seq "$ROUNDS"); do
  log "round $r of $ROUNDS: tracing off, then on (1 %), ${SECS} s each"
  round "off-$r" ""
  round "on-$r" "$ENDPOINT"
done

python3 - "$OUT" "$SECS" "$ROUNDS" <<'PY'
import re, statistics, sys, pathlib
out, secs, rounds = pathlib.Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
def rate(name):
    p = out / name / "summary.md"
    m = re.search(r"^- order 202: (\d+)", p.read_text(), re.M) if p.exists() else None
    return int(m.group(1)) / secs if m else None
def spans(name, metric):
    p = out / f"{name}-spans.txt"
    m = re.search(rf"^{metric} (\d+)", p.read_text(), re.M) if p.exists() else None
    return int(m.group(1)) if m else None
off = [rate(f"off-{r}") for r in range(1, rounds + 1)]
on = [rate(f"on-{r}") for r in range(1, rounds + 1)]
exported = [spans(f"on-{r}", "seckill_trace_spans_exported_total") for r in range(1, rounds + 1)]
dropped = [spans(f"on-{r}", "seckill_trace_spans_dropped_total") for r in range(1, rounds + 1)]
rows = [f"| {r} | {a:.0f} | {b:.0f} | {e} | {d} |" if a and b else f"| {r} | {a or 'not measured'} | {b or 'not measured'} | {e} | {d} |"
        for r, (a, b, e, d) in enumerate(zip(off, on, exported, dropped), 1)]
md = ("# The cost of tracing on the purchase path (one run, this machine)\n\n"
      f"Goose rush at full speed, {secs:.0f} s a round, 64 users; orders/s (202s).\n\n"
      "| round | tracing off | tracing on (1 %) | spans exported | spans dropped |\n|---|---|---|---|---|\n"
      + "\n".join(rows) + "\n")
ok = all(off) and all(on)
if ok:
    ratio = statistics.median(on) / statistics.median(off)
    md += f"\nmedian on ÷ median off: **{ratio:.2f}** (target ≥ 0.95)\n"
else:
    md += f"\nNot measured (see {out}).\n"
(out / "summary.md").write_text(md)
print(md)
sys.exit(0 if ok else 1)
PY
