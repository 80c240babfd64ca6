#!/usr/bin/env bash
# The cost of TLS on the purchase path and on the order-writer: the same measurements on
# the plain local stack and on the TLS profile (TLS, ACL users, SCRAM roles, SASL_SSL),
# back to back in one run, reported as ratios (TLS / plain; timings here are noisy, the
# ratios of one run are what compare).
#   loadtest/bench/tls.sh [purchases=50000] [rows=50000]
#   - the purchase path: gateway's purchase_bench (stock API + the gateway's pipelined
#     Redis client + the purchase script; over TLS its own rustls session), purchases/s;
#   - the writer: write_vs_copy's order-writer (topic -> PostgreSQL, offsets committed),
#     rows/s (median of 3 rounds: the first also waits for a fresh broker's group
#     coordinator), and COPY into `orders` as the database's own reference.
# Writes .run/bench/tls-<time>/summary.md; exits 1 if a measure is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
N="${1:-50000}"
ROWS="${2:-50000}"
OUT="$ROOT/.run/bench/tls-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { printf '[bench-tls] %s\n' "$*" >&2; }
# Each round reads its stack from its stack.env: addresses exported by a caller (run.sh
# exports the plain stack's) would win over it.
unset SECKILL_REDIS_URL SECKILL_KAFKA_BROKERS SECKILL_DATABASE_URL SECKILL_REDIS_CA_FILE \
  SECKILL_KAFKA_EXTRA SECKILL_DATABASE_CA_FILE SECKILL_STACK_TLS

cargo build --release -q -p stackctl -p gateway -p order-writer --bins
cargo build --release -q -p gateway --example purchase_bench
cargo build --release -q -p order-writer --example write_vs_copy
SECKILL_RUN_DIR="$ROOT/.run" target/release/stackctl up >/dev/null
SECKILL_STACK_TLS=1 SECKILL_RUN_DIR="$ROOT/.run/tls" target/release/stackctl up >/dev/null

for profile in plain tls; do
  env_file="$ROOT/.run/stack.env"
  [ "$profile" = tls ] && env_file="$ROOT/.run/tls/stack.env"
  log "$profile: purchase path ($N purchases), then the writer ($ROWS rows)"
  SECKILL_STACK_ENV="$env_file" target/release/examples/purchase_bench "$N" \
    >"$OUT/purchase-$profile.txt" 2>&1 || true
  SECKILL_STACK_ENV="$env_file" target/release/examples/write_vs_copy "$ROWS" "" 3 \
    >"$OUT/writer-$profile.txt" 2>"$OUT/writer-$profile.err" || true
done

python3 - "$OUT" <<'PY'
import re, sys, pathlib
out = pathlib.Path(sys.argv[1])
def read(name):
    p = out / name
    return p.read_text() if p.exists() else ""
def rate(name, pattern):
    m = re.search(pattern, read(name), re.M)
    return float(m.group(1)) if m else None
rows, missing = [], []
for label, name, pattern, unit in [
    ("purchase path", "purchase-{}.txt", r"^\s*project purchase path .*?: ([\d.]+) purchases/s", "purchases/s"),
    ("order-writer", "writer-{}.txt", r"^median rows/s: writer (\d+)", "rows/s"),
    ("COPY into orders (the database's reference)", "writer-{}.txt", r"^median rows/s: writer \d+ write-alone \d+ copy (\d+)", "rows/s"),
]:
    plain, tls = rate(name.format("plain"), pattern), rate(name.format("tls"), pattern)
    if plain is None or tls is None:
        missing.append(label)
        rows.append(f"| {label} | {plain or 'not measured'} | {tls or 'not measured'} | - |")
        continue
    rows.append(f"| {label} | {plain:.0f} {unit} | {tls:.0f} {unit} | {tls / plain:.2f} |")
md = "# The cost of TLS (one run, this machine)\n\n| measure | plain | TLS profile | TLS / plain |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
if missing:
    md += "\nNot measured: " + ", ".join(missing) + f" (see {out}).\n"
(out / "summary.md").write_text(md)
print(md)
sys.exit(1 if missing else 0)
PY
