#!/usr/bin/env bash
# One bench run on this machine: references and the project measured back to back,
# reported as ratios (timings here are noisy; ratios from one run are what compare).
#   loadtest/bench/run.sh [seconds=5]
# Writes .run/bench/<time>/summary.md and summary.json.
#  1. sold-out path vs a hello-world may_minihttp server, both under wrk -t1 -c64 (wrk
#     finds the peak: an open-ended C load generator costs the 2 cores least);
#  2. p99 of the sold-out path at a fixed offered load of half that peak (Goose with
#     --throttle-requests, which paces requests; latency from its report);
#  3. order-writer rows/s vs PostgreSQL COPY of the same rows (write_vs_copy example);
#  4. the purchase path (stock API + pipelined Redis + Lua) vs redis-benchmark running
#     the same script, plain and 16-pipelined (purchase_bench example).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SECS="${1:-5}"
cd "$ROOT"
OUT=".run/bench/$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
echo "[bench] 1/4 sold-out path vs hello-world (wrk, ${SECS}s each)" >&2
loadtest/bench/sold_out_vs_hello.sh "$SECS" 64 | tee "$OUT/sold_out.txt"
HELLO=$(awk -F: '/^hello-world/ {print $2+0}' "$OUT/sold_out.txt")
SOLD=$(awk -F: '/^gateway sold-out path/ {print $2+0}' "$OUT/sold_out.txt")
echo "[bench] 2/4 p99 at half the peak (Goose, throttled)" >&2
HALF=$(python3 -c "print(int($SOLD/2))")
./dev load browse --units 1 -- --users 32 --increase-rate 32 --run-time "${SECS}s" --throttle-requests "$HALF" --quiet --no-print-metrics >"$OUT/half_peak.txt" 2>&1 || true
P99=$(awk -F'|' '/^\| sale state/ {gsub(/ /,"",$6); print $6}' "$OUT/half_peak.txt" | tail -1)
P50=$(awk -F'|' '/^\| sale state/ {gsub(/ /,"",$4); print $4}' "$OUT/half_peak.txt" | tail -1)
echo "[bench] 3/4 order-writer vs COPY" >&2
cargo run --release -q -p order-writer --example write_vs_copy 50000 2>/dev/null | tee "$OUT/writer.txt"
WRITER=$(awk '/order-writer \(topic/ {for (i=1;i<=NF;i++) if ($i=="rows/s") print $(i-1)}' "$OUT/writer.txt")
STMT=$(awk '/batch statement alone/ {for (i=1;i<=NF;i++) if ($i=="rows/s") print $(i-1)}' "$OUT/writer.txt")
COPY=$(awk '/COPY FROM STDIN/ {for (i=1;i<=NF;i++) if ($i=="rows/s") print $(i-1)}' "$OUT/writer.txt")
echo "[bench] 4/4 purchase path vs redis-benchmark" >&2
cargo run --release -q -p gateway --example purchase_bench 100000 2>/dev/null | tee "$OUT/purchase.txt"
PROJ=$(awk '/project purchase path/ {for (i=1;i<=NF;i++) if ($i=="purchases/s") print $(i-1)}' "$OUT/purchase.txt")
REF1=$(awk '/-P 1 :/ {for (i=1;i<=NF;i++) if ($i=="calls/s,") print $(i-1)}' "$OUT/purchase.txt")
REF16=$(awk '/-P 16:/ {for (i=1;i<=NF;i++) if ($i=="calls/s,") print $(i-1)}' "$OUT/purchase.txt")
python3 - "$OUT" "$HELLO" "$SOLD" "$HALF" "${P50:-0}" "${P99:-0}" "$WRITER" "$STMT" "$COPY" "$PROJ" "$REF1" "$REF16" <<'PY'
import json, sys
out, hello, sold, half, p50, p99, writer, stmt, copy, proj, ref1, ref16 = sys.argv[1], *map(float, sys.argv[2:])
r = {
  "sold_out_rps": sold, "hello_world_rps": hello, "sold_out_over_hello": round(sold / hello, 3),
  "offered_rps_half_peak": half, "sale_state_p50_us_at_half_peak": p50, "sale_state_p99_us_at_half_peak": p99,
  "writer_rows_per_s": writer, "batch_statement_rows_per_s": stmt, "copy_rows_per_s": copy,
  "writer_over_copy": round(writer / copy, 3), "statement_over_copy": round(stmt / copy, 3),
  "purchases_per_s": proj, "redis_benchmark_calls_per_s": ref1, "redis_benchmark_p16_calls_per_s": ref16,
  "purchase_over_redis_benchmark": round(proj / ref1, 3), "purchase_over_redis_benchmark_p16": round(proj / ref16, 3),
}
json.dump(r, open(f"{out}/summary.json", "w"), indent=2)
md = f"""# Bench (one run, this machine)

| measure | project | reference | ratio |
|---|---|---|---|
| sold-out path (wrk -t1 -c64) | {sold:.0f} req/s | hello-world may_minihttp {hello:.0f} req/s | {sold/hello:.2f} |
| order-writer, topic to PostgreSQL | {writer:.0f} rows/s | COPY {copy:.0f} rows/s | {writer/copy:.2f} |
| batch statement alone | {stmt:.0f} rows/s | COPY {copy:.0f} rows/s | {stmt/copy:.2f} |
| purchase path (stock API, pipelined may Redis, Lua) | {proj:.0f} purchases/s | redis-benchmark same script -c 50 {ref1:.0f} calls/s | {proj/ref1:.2f} |
| purchase path | {proj:.0f} purchases/s | redis-benchmark -c 50 -P 16 {ref16:.0f} calls/s | {proj/ref16:.2f} |

At a fixed offered load of half the sold-out peak ({half:.0f} req/s, Goose throttled, sale-state reads): p50 {p50:.0f} µs, p99 {p99:.0f} µs (HdrHistogram).
"""
open(f"{out}/summary.md", "w").write(md)
print(md)
PY
echo "[bench] written to $OUT" >&2
