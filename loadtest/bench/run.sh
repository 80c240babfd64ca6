#!/usr/bin/env bash
# One bench run on this machine: references and the project measured back to back,
# reported as ratios (timings here are noisy; ratios from one run are what compare).
#   loadtest/bench/run.sh [seconds=5]
#   loadtest/bench/run.sh --smoke   every step at a tiny size (1 s, 2,000 purchases), so that
#                                   a step that broke shows at once; exits 1 if any step
#                                   was not measured (the numbers mean nothing)
#   loadtest/bench/run.sh scaleout [purchases=100000]   (step 5 alone: scaleout.sh)
#   loadtest/bench/run.sh tracing [seconds=5] [rounds=3]   the cost of tracing: the purchase
#                                   path (Goose rush) with tracing off and on at 1 %, as a
#                                   ratio (tracing.sh; --smoke runs it small)
#   loadtest/bench/run.sh tls [purchases=50000] [rows=50000]   the cost of TLS: the
#                                   purchase path and the writer on the plain stack and on
#                                   the TLS profile, as ratios (tls.sh; --smoke runs it small)
# Writes .run/bench/<time>/summary.md and summary.json (and each step's raw output; the
# JSON carries the commit, `dirty` when the tree had changes, the UTC date, the smoke flag
# and the machine: nproc, load averages), the charts in <time>/plots/*.svg (seckill-plot:
# latency percentiles of step 2, writer vs COPY, scale-out; a chart it cannot draw is named
# with the reason, and fails a smoke run), and appends summary.json as one line to
# .run/bench/history.jsonl; summary.md sets the key ratios beside the previous non-smoke
# run's there.
# Ports of its own processes (defaults in brackets; set them to run beside another bench):
#   BENCH_GATEWAY_PORT [18093], BENCH_ADMIN_PORT [18094]   step 2's gateway (public,
#       internal listener); BENCH_WRITER_METRICS_PORT [19113]  step 2's order-writer;
#   BENCH_SOLD_OUT_PORT [18090], BENCH_SOLD_OUT_ADMIN_PORT [18092], BENCH_HELLO_PORT
#       [18091]   step 1 (sold_out_vs_hello.sh);
#   BENCH_CLUSTER_PORT [21601]   step 5's clusters (scaleout.sh: ports from there up to
#       +125, each cluster bus +10000: keep that below the ephemeral range, 32768 on
#       Linux, or a client's socket may hold it; 22601 runs beside the default).
# The stack's own ports come from ./dev's (SECKILL_REDIS_PORT, SECKILL_PG_PORT,
# SECKILL_KAFKA_PORT; the TLS profile follows them).
#  1. sold-out path vs a hello-world may_minihttp server, both under wrk -t1 -c64;
#  2. order 202 latency at half the purchase peak: a Goose `rush` (token, then order)
#     at full speed finds the peak orders/s, then one paced open-loop at half of it
#     (--throttle-requests, 64 users so the pace never waits on answers) reports order
#     and token p50/p99, each request timed from when it is sent (after its throttle
#     permit), HdrHistogram corrected for coordinated omission; the token (Redis only)
#     next to the order (Redis + Kafka) in the same run separates Kafka's share from
#     the machine's;
#  3. order-writer rows/s vs PostgreSQL COPY of the same rows (write_vs_copy example,
#     medians of 3 rounds): like for like, COPY into the real `orders` table (same
#     constraints, foreign key with its sale row present, indexes); and, second, COPY into
#     a table of that shape without the foreign key;
#  4. the purchase path (stock API + pipelined may Redis + Lua, gateway's purchase_bench)
#     vs redis-benchmark running the same EVALSHA, plain and -P 16 (purchase_reference),
#     with what Redis spent on each (CPU µs per call, EVALSHA µs per call, calls per read)
#     and the project's own CPU per purchase;
#  5. scale-out: one hot sale (64 stock buckets) on a Redis Cluster of 1, 2 and 3
#     masters (scaleout.sh): purchases/s as ratios to 1 master, Redis CPU per purchase,
#     and what it predicts with one machine per shard.
# The stack comes up through ./dev up (stackctl). A step that cannot be measured is
# reported as such in the summary.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ "${1:-}" = scaleout ]; then
  exec "$ROOT/loadtest/bench/scaleout.sh" "${2:-100000}"
fi
if [ "${1:-}" = tracing ]; then
  exec "$ROOT/loadtest/bench/tracing.sh" "${2:-5}" "${3:-3}"
fi
if [ "${1:-}" = tls ]; then
  exec "$ROOT/loadtest/bench/tls.sh" "${2:-50000}" "${3:-50000}"
fi
SMOKE=0 N=100000
if [ "${1:-}" = --smoke ]; then
  SMOKE=1 N=2000
  shift
fi
SECS="${1:-5}"
[ "$SMOKE" = 1 ] && SECS=1
case "$SECS" in ''|*[!0-9]*) echo "[bench] error: seconds must be a whole number, got '$SECS'" >&2; exit 2 ;; esac
cd "$ROOT"
for tool in wrk redis-benchmark redis-cli python3 curl; do
  command -v "$tool" >/dev/null || {
    echo "[bench] error: '$tool' is missing; run ./dev setup (as root) to install it" >&2
    exit 1
  }
done
OUT=".run/bench/$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
cut -d' ' -f1-3 /proc/loadavg >"$OUT/load_start.txt"  # the machine may be shared
# What was measured, for summary.json and the history: the commit, whether the tree had
# changes (untracked files included), when, on how many cores.
BENCH_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
BENCH_DIRTY=false
[ -n "$(git status --porcelain 2>/dev/null)" ] && BENCH_DIRTY=true
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
export BENCH_COMMIT BENCH_DIRTY BENCH_DATE BENCH_SMOKE=$SMOKE BENCH_NPROC=$(nproc) BENCH_OUT=$OUT
log() { echo "[bench] $*" >&2; }

log "building (release: stackctl, gateway, order-writer, loadtest, bench examples)"
cargo build --release -q -p stackctl -p gateway -p order-writer -p loadtest --bins \
  || { log "error: build failed"; exit 1; }
cargo build --release -q -p gateway --example hello --example purchase_bench \
  && cargo build --release -q -p order-writer --example write_vs_copy --example purchase_reference \
  || { log "error: building the bench examples failed"; exit 1; }
./dev up >"$OUT/stack.txt" 2>&1 || { log "error: ./dev up failed (see $OUT/stack.txt)"; exit 1; }

log "1/5 sold-out path vs hello-world (wrk, ${SECS}s each)"
loadtest/bench/sold_out_vs_hello.sh "$SECS" 64 >"$OUT/sold_out.txt" 2>&1
cat "$OUT/sold_out.txt" >&2

log "2/5 order 202 latency at half the purchase peak (Goose rush)"
USERS=64
# Its own gateway and writer (own ports, spool and metrics port) on the ./dev stack, the
# way `stackctl with-services` starts them, so that a with-services run someone else
# keeps open on the same stack (it holds .run/spool/gateway-run) does not collide.
source <(target/release/stackctl env | sed 's/^/export /')
GW_PORT=${BENCH_GATEWAY_PORT:-18093} GW_ADMIN_PORT=${BENCH_ADMIN_PORT:-18094}
WRITER_METRICS_PORT=${BENCH_WRITER_METRICS_PORT:-19113}
SECKILL_LISTEN=127.0.0.1:$GW_PORT SECKILL_INTERNAL_LISTEN=127.0.0.1:$GW_ADMIN_PORT SECKILL_SPOOL_DIR="$OUT/spool" SECKILL_AUDIT_LOG="$OUT/audit.jsonl" \
  SECKILL_DEV_INSECURE=1 SECKILL_LOG=warn SECKILL_IP_RPS=100000000 SECKILL_IP_BURST=100000000 SECKILL_MAX_CONNECTIONS_PER_IP=0 \
  SECKILL_GLOBAL_RPS=100000000 SECKILL_GLOBAL_BURST=100000000 SECKILL_USER_RPS=100000000 \
  SECKILL_USER_BURST=100000000 target/release/gateway >"$OUT/gateway.log" 2>&1 &
GW=$!
SECKILL_METRICS_LISTEN=127.0.0.1:$WRITER_METRICS_PORT SECKILL_LOG=warn target/release/order-writer >"$OUT/writer.log" 2>&1 &
WR=$!
trap 'kill $GW $WR 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf localhost:$GW_PORT/readyz >/dev/null && break; sleep 0.1; done
load() { # out-dir, flags…
  local dir=$1; shift
  target/release/seckill-load rush --host "http://127.0.0.1:$GW_PORT" \
    --admin-url "http://127.0.0.1:$GW_ADMIN_PORT" --units 100000000 \
    --out "$dir" "$@" >"$dir.txt" 2>&1
}
mkdir -p "$OUT/peak" "$OUT/half"
load "$OUT/peak" -- --users $USERS --increase-rate $USERS --run-time "${SECS}s" --quiet
PEAK=$(python3 - "$OUT/peak" "$SECS" <<'PY'
import re, sys
try:
    s = open(sys.argv[1] + "/summary.md").read()
    m = re.search(r"^- order 202: (\d+)", s, re.M)
    print(int(m.group(1)) / float(sys.argv[2]) if m else 0)
except OSError:
    print(0)
PY
)
HALF=$(python3 -c "print(int($PEAK / 2))")
if [ "$HALF" -gt 0 ]; then
  # Each iteration is a token request then an order: 2 requests per order. Requests are
  # timed from their throttle permit (scenarios.rs), so the wait for a permit is not
  # latency; 64 users keep enough requests ready that the throttle, not the answers,
  # sets the pace (open loop). A user's next order is due every HU / HALF s: the
  # coordinated-omission correction fills in the orders a slow answer held back.
  HU=64
  load "$OUT/half" --expected-interval-us $((HU * 1000000 / HALF)) -- --users $HU \
    --increase-rate $HU --run-time "${SECS}s" --throttle-requests $((HALF * 2)) --quiet
fi

curl -s "localhost:$GW_ADMIN_PORT/metrics" >"$OUT/gateway_metrics.txt" 2>/dev/null
kill $GW $WR 2>/dev/null; wait $GW $WR 2>/dev/null

log "3/5 order-writer vs COPY"
target/release/examples/write_vs_copy "$N" "" 3 >"$OUT/writer.txt" 2>"$OUT/writer.err"
cat "$OUT/writer.txt" >&2

log "4/5 purchase path vs redis-benchmark"
target/release/examples/purchase_bench "$N" >"$OUT/purchase.txt" 2>&1
target/release/examples/purchase_reference "$N" >"$OUT/purchase_reference.txt" 2>&1
cat "$OUT/purchase.txt" "$OUT/purchase_reference.txt" >&2

log "5/5 scale-out: one hot sale on 1, 2, 3 Redis Cluster masters"
loadtest/bench/scaleout.sh "$N" "$OUT" >/dev/null

cut -d' ' -f1-3 /proc/loadavg >"$OUT/load_end.txt"
python3 - "$OUT" "$SECS" <<'PY'
import json, os, re, sys
out, secs = sys.argv[1], sys.argv[2]

def read(name):
    try:
        return open(f"{out}/{name}").read()
    except OSError:
        return ""

def num(pattern, text):
    m = re.search(pattern, text, re.M)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None

def why(text, fallback):
    """The last non-empty line of a step's output: the reason it gave no number."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return (lines[-1] if lines else fallback)[:200]

def latency(run, name="order"):
    t = read(f"{run}/latency.md")
    m = re.search(rf"^\| {name} \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", t, re.M)
    return (int(m.group(2)), int(m.group(4)), int(m.group(1))) if m else None

def produce_p(q):
    """Upper bound (ms) of the gateway's produce-to-delivery-report bucket holding quantile q."""
    t = read("gateway_metrics.txt")
    b = [(m.group(1), float(m.group(2))) for m in
         re.finditer(r'^seckill_kafka_produce_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', t, re.M)]
    if not b or b[-1][1] == 0:
        return None
    for le, c in b:
        if c >= q * b[-1][1]:
            return "over 2500" if le == "+Inf" else f"{float(le) * 1000:g}"

r, rows, notes = {}, [], []

def row(measure, project, punit, ref, rname, runit, key, why_missing):
    r[key + "_project"], r[key + "_reference"] = project, ref
    if project and ref:
        ratio = project / ref
        r[key + "_ratio"] = round(ratio, 3)
        rows.append(f"| {measure} | {project:.0f} {punit} | {rname} {ref:.0f} {runit} | {ratio:.2f} |")
    else:
        r[key + "_ratio"] = None
        p = f"{project:.0f} {punit}" if project else "not measured"
        q = f"{rname} {ref:.0f} {runit}" if ref else f"{rname}: not measured"
        rows.append(f"| {measure} | {p} | {q} | — |")
        notes.append(f"- {measure}: {why_missing}")

sold_txt = read("sold_out.txt")
row("sold-out path (wrk -t1 -c64)", num(r"^gateway sold-out path\s*:\s*([\d.]+)", sold_txt), "req/s",
    num(r"^hello-world may_minihttp\s*:\s*([\d.]+)", sold_txt), "hello-world may_minihttp", "req/s",
    "sold_out", why(sold_txt, "sold_out_vs_hello.sh printed nothing"))

w_txt = read("writer.txt")
m = re.search(r"^median rows/s: writer (\d+) write-alone (\d+) copy (\d+) copy-no-fk (\d+)", w_txt, re.M)
w, s, c, d = (float(x) for x in m.groups()) if m else (None, None, None, None)
wwhy = why(read("writer.err") + w_txt, "write_vs_copy printed nothing")
same = "COPY into orders (same schema: PK, checks, FK, indexes)"
row("order-writer, topic to PostgreSQL (median of 3)", w, "rows/s", c, same, "rows/s", "writer", wwhy)
row("batch write alone (median of 3)", s, "rows/s", c, same, "rows/s", "write_alone", wwhy)
row("order-writer, topic to PostgreSQL (median of 3)", w, "rows/s", d, "COPY without the FK (indexes, checks kept)",
    "rows/s", "writer_vs_no_fk", wwhy)

p_txt, ref_txt = read("purchase.txt"), read("purchase_reference.txt")
proj = num(r"project purchase path.*?\):\s*([\d.]+) purchases/s", p_txt)
# P=16 fresh: the same -P 16 run over ten times as many tokens as calls, so about 95%
# of its calls are full purchases, as every project call is (like for like).
for p, key, label in ((1, "p1", " -c 50"), (16, "p16", " -c 50 -P 16"),
                      ("16 fresh", "p16_fresh", " -c 50 -P 16, fresh tokens (~95% full purchases)")):
    ref = num(rf"^reference P={p}: calls/s ([\d.]+)", ref_txt)
    full = num(rf"^reference P={p}: calls/s [\d.]+ full/s ([\d.]+)", ref_txt)
    r[f"redis_benchmark_{key}_full_purchases_per_s"] = full
    m = re.search(rf"^reference P={p}: unmeasured: (.*)$", ref_txt, re.M)
    reason = m.group(1) if m else why(ref_txt if proj else p_txt, "no output")
    row(f"purchase path (stock API, pipelined may Redis, Lua)" if p == 1 else "purchase path",
        proj, "purchases/s", ref, f"redis-benchmark same EVALSHA{label}",
        "calls/s", f"purchase_{key}", reason)

peak = num(r"^- order 202: (\d+)", read("peak/summary.md"))
peak = peak / float(secs) if peak else None
half = latency("half")
token = latency("half", "token")
load = f"load average (1/5/15 min) {read('load_start.txt').strip()} at the start, {read('load_end.txt').strip()} at the end"
r["load_start"], r["load_end"] = read("load_start.txt").strip(), read("load_end.txt").strip()
r["purchase_peak_orders_per_s"] = peak
if half:
    p50, p99, n = half
    r.update(order_p50_us_at_half_peak=p50, order_p99_us_at_half_peak=p99, order_count_at_half_peak=n,
             order_p99_target_us=20000, order_p99_within_target=p99 <= 20000)
    lat = (f"Order 202 latency at half the purchase peak (peak {peak:.0f} orders/s in a {secs} s Goose rush; "
           f"then paced at {peak/2:.0f} orders/s, HdrHistogram corrected for coordinated omission, {n} orders): "
           f"p50 {p50/1000:.1f} ms, p99 {p99/1000:.1f} ms — target p99 ≤ 20 ms: "
           f"{'met' if p99 <= 20000 else 'MISSED'}.")
    if token:
        r.update(token_p50_us_at_half_peak=token[0], token_p99_us_at_half_peak=token[1])
        lat += (f" Same run, token (Redis only, no Kafka): p50 {token[0]/1000:.1f} ms, p99 {token[1]/1000:.1f} ms; "
                f"the gateway's produce-to-delivery-report histogram: p50 ≤ {produce_p(0.5)} ms, "
                f"p99 ≤ {produce_p(0.99)} ms (bucket bounds).")
else:
    r.update(order_p50_us_at_half_peak=None, order_p99_us_at_half_peak=None, order_p99_within_target=None)
    lat = ("Order 202 latency at half the purchase peak: not measured ("
           + (why(read("half.txt"), "no output") if peak else "no purchase peak: " + why(read("peak.txt"), "no output"))
           + ").")
# Step 4's profile: what Redis spent per call, and the client's own CPU per purchase.
prof = re.search(r"^redis: masters \d+ cpu_us_per_purchase ([\d.]+) evalsha_usec_per_call ([\d.]+) "
                 r"cmds_per_read ([\d.]+) cpu_us_per_master \S+ client_cpu_us_per_purchase ([\d.]+)", p_txt, re.M)
profile = ""
if prof:
    c, u, b, k = (float(x) for x in prof.groups())
    r.update(purchase_redis_cpu_us_per_purchase=c, purchase_evalsha_usec_per_call=u,
             purchase_calls_per_read=b, purchase_client_cpu_us_per_purchase=k)
    profile = (f"Purchase path, what it cost in that run: Redis CPU {c:.1f} µs per purchase, EVALSHA {u:.1f} µs per "
               f"call (commandstats), {b:.0f} purchases per Redis read; the client (pipe, stock API, 256 coroutines on one may worker thread) "
               f"{k:.1f} µs CPU per purchase.")
    for p, key in ((1, "p1"), (16, "p16"), ("16 fresh", "p16_fresh")):
        m = re.search(rf"^reference P={p}: .* redis cpu_us_per_call ([\d.]+) evalsha_usec_per_call ([\d.]+) "
                      rf"cmds_per_read ([\d.]+)", ref_txt, re.M)
        if m:
            c, u, b = (float(x) for x in m.groups())
            r[f"redis_benchmark_{key}_redis_cpu_us_per_call"] = c
            r[f"redis_benchmark_{key}_calls_per_read"] = b
            profile += (f" redis-benchmark -P {p}: Redis CPU {c:.1f} µs per call, EVALSHA {u:.1f} µs, "
                        f"{b:.0f} calls per read.")
    profile += (" The purchase path's bound where Redis is the bottleneck is Redis's CPU per call of the "
                "reference over the project's per purchase (a third of redis-benchmark's plain -P 16 calls "
                "replay a used token, the script's cheap exit).")
try:
    r["scaleout"] = json.load(open(f"{out}/scaleout.json"))
except (OSError, ValueError):
    r["scaleout"] = None
# The run itself: what was measured, when, where (history.jsonl compares runs by these).
env = os.environ
r.update(commit=env.get("BENCH_COMMIT", "unknown"), dirty=env.get("BENCH_DIRTY") == "true",
         date=env.get("BENCH_DATE"), smoke=env.get("BENCH_SMOKE") == "1", out=env.get("BENCH_OUT"),
         machine={"nproc": int(env.get("BENCH_NPROC") or 0) or None,
                  "load_start": r["load_start"], "load_end": r["load_end"]})
# The targets, each a ratio measured in this run (README, "Performance").
def scale_row(series, masters):
    runs = (r["scaleout"] or {}).get("series", {}).get(series, [])
    return next((x for x in runs if x["masters"] == masters), {})
def wait_row(masters):
    return next((x for x in (r["scaleout"] or {}).get("wait_ratio", []) if x["masters"] == masters), {})
def over(a, b):
    return round(a / b, 3) if a is not None and b else None
targets = [
    ("purchase path ÷ redis-benchmark -P 16", r.get("purchase_p16_ratio"), ">=", 0.9),
    ("cluster path with WAIT ÷ without (1 replica per master, 3 masters, measured)",
     wait_row(3).get("vs_no_wait"), ">=", 0.8),
    ("order 202 p99 ÷ token p99 at half the purchase peak",
     over(r.get("order_p99_us_at_half_peak"), r.get("token_p99_us_at_half_peak")), "<=", 1.5),
    ("sold-out path ÷ hello-world", r.get("sold_out_ratio"), ">=", 0.97),
    ("order-writer ÷ COPY into orders (like for like)", r.get("writer_ratio"), ">=", 0.9),
    ("scale-out, 3 masters ÷ 1, predicted with one machine per shard",
     scale_row("masters_only", 3).get("predicted_ratio_to_1_master"), ">=", 2.5),
]
r["targets"] = [{"measure": m, "value": v, "target": f"{op} {t}",
                 "met": None if v is None else (v >= t if op == ">=" else v <= t)} for m, v, op, t in targets]
json.dump(r, open(f"{out}/summary.json", "w"), indent=2)
md = f"# Bench (one run, this machine)\n\nMachine: {load}.\n\n"
md += "| target | this run | goal | |\n|---|---|---|---|\n"
for t in r["targets"]:
    v = "not measured" if t["value"] is None else f"{t['value']:.2f}"
    md += f"| {t['measure']} | {v} | {t['target']} | {'—' if t['met'] is None else 'met' if t['met'] else 'missed'} |\n"
md += "\n| measure | project | reference | ratio |\n|---|---|---|---|\n"
md += "\n".join(rows) + "\n\n" + lat + "\n"
if profile:
    md += "\n" + profile + "\n"
md += ("\nWriter references are like for like: the same rows, in the same run, into the real `orders` "
       "schema (primary key, checks, foreign key to `sales` with the sale row present, both partial "
       "indexes), synchronous_commit on; the COPY without the foreign key is shown second for scale.\n")
if notes:
    md += "\nNot measured:\n" + "\n".join(notes) + "\n"
scale = read("scaleout.md")
md += "\n" + (scale if scale else "## Scale-out\n\nNot measured: " + why(read("scaleout.txt") + read("scaleout.err"), "scaleout.sh wrote nothing") + "\n")
open(f"{out}/summary.md", "w").write(md)
print(md)
PY
SUMMARY_RC=$?

# Charts and the comparison with the previous non-smoke run, then this run into the history.
HISTORY=.run/bench/history.jsonl
PLOT_FLAGS=()
[ "$SMOKE" = 1 ] && PLOT_FLAGS=(--strict)
target/release/seckill-plot "$OUT" --history "$HISTORY" "${PLOT_FLAGS[@]}" >"$OUT/plots.md" 2>"$OUT/plots.err"
PLOT_RC=$?
if [ -s "$OUT/plots.md" ]; then
  { echo; cat "$OUT/plots.md"; } >>"$OUT/summary.md"
else
  printf '\n## Plots\n\nNot drawn: %s\n' "$(tail -n 1 "$OUT/plots.err")" >>"$OUT/summary.md"
fi
cat "$OUT/plots.md" "$OUT/plots.err"
python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' \
  "$OUT/summary.json" >>"$HISTORY" || log "error: $OUT/summary.json not added to $HISTORY"
log "written to $OUT"
if [ "$SUMMARY_RC" != 0 ] || ! grep -q '^| target | this run |' "$OUT/summary.md"; then
  log "error: the summary was not written (its script exited $SUMMARY_RC)"
  exit 1
fi
if [ "$SMOKE" = 1 ] && [ "$PLOT_RC" != 0 ]; then
  log "smoke: FAIL — a chart was not drawn (see 'Plots' in $OUT/summary.md)"
  exit 1
fi
if [ "$SMOKE" = 1 ] && grep -qiE "not measured|≤ None" "$OUT/summary.md"; then
  log "smoke: FAIL — a step was not measured (see 'Not measured' in $OUT/summary.md)"
  exit 1
fi
if [ "$SMOKE" = 1 ]; then
  log "smoke: the cost of tracing (tracing.sh, small)"
  loadtest/bench/tracing.sh 1 1 >"$OUT/tracing.txt" 2>&1 \
    || { cat "$OUT/tracing.txt" >&2; log "smoke: FAIL — tracing.sh did not measure every round"; exit 1; }
  log "smoke: the cost of TLS (tls.sh, small)"
  loadtest/bench/tls.sh 2000 2000 >"$OUT/tls.txt" 2>&1 \
    || { cat "$OUT/tls.txt" >&2; log "smoke: FAIL — tls.sh did not measure every step"; exit 1; }
  log "smoke: every step measured"
fi
exit 0
