#!/usr/bin/env bash
# Schema-driven fuzzing of a live gateway: schemathesis (version pinned in
# requirements.txt, installed once into $SECKILL_RUN_DIR/venv) generates requests from
# gateway/openapi.json, valid and invalid, and checks every answer against it: no 5xx
# other than the documented 503s, only documented statuses, content types, headers
# (Retry-After, Allow) and bodies.
#
#   gateway/fuzz/run.sh [GATEWAY_URL [GATEWAY_ADMIN_URL]]
#       (defaults: $GATEWAY_URL and $GATEWAY_ADMIN_URL, as `stackctl with-services` sets them)
#
# GATEWAY_URL is the gateway's public listener (the buyers' routes); GATEWAY_ADMIN_URL its
# internal one (`/admin/*`, `/metrics`, the payment provider's callback). openapi.json
# says which path is served where (a path's own `servers`); schemathesis's `--url` sets
# one base URL for every operation, so hooks.py sends the internal-only paths to
# GATEWAY_ADMIN_URL (FUZZ_INTERNAL_URL).
#
# Auth: a ticket minted with `gateway mint` (SECKILL_TICKET_SECRET, or the development
# default the local gateway runs with) and the admin bearer token (SECKILL_ADMIN_TOKEN,
# or the development default). Bounds: FUZZ_EXAMPLES test cases per operation and phase
# (default 40) and FUZZ_MAX_TIME seconds for the whole run (default 50; the fuzzing and
# stateful phases repeat until it is spent). The seed is fixed (FUZZ_SEED, default
# 20261207), so the gate that `./dev test` runs draws the same cases every time;
# `./dev fuzz` explores with a new random seed (printed, so that a failure replays with
# FUZZ_SEED=<seed>). Exits non-zero on any failure.
#
# The fuzzer flips switches and pauses sales, so the gateway under test should run with
# a cluster name of its own (SECKILL_CLUSTER) and user limits that a single fuzzing
# user does not exhaust at once; `./dev test` starts it so:
#   SECKILL_CLUSTER=fuzz_$$ SECKILL_USER_RPS=100000 SECKILL_USER_BURST=100000 \
#     target/release/stackctl with-services -- gateway/fuzz/run.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
URL="${1:-${GATEWAY_URL:?usage: run.sh GATEWAY_URL GATEWAY_ADMIN_URL}}"
URL="${URL%/}"
INTERNAL_URL="${2:-${GATEWAY_ADMIN_URL:?usage: run.sh GATEWAY_URL GATEWAY_ADMIN_URL}}"
export FUZZ_INTERNAL_URL="${INTERNAL_URL%/}"
RUN="${SECKILL_RUN_DIR:-$ROOT/.run}"
VENV="$RUN/venv"
EXAMPLES="${FUZZ_EXAMPLES:-40}"
MAX_TIME="${FUZZ_MAX_TIME:-50}"
OUT="$RUN/fuzz"

log() { printf '[fuzz] %s\n' "$*" >&2; }

# The venv, created once; reinstalled when requirements.txt changes.
stamp="$VENV/.requirements"
if ! cmp -s "$HERE/requirements.txt" "$stamp" 2>/dev/null; then
  log "installing $(grep -v '^#' "$HERE/requirements.txt" | tr '\n' ' ')into $VENV"
  if ! python3 -m venv "$VENV"; then
    # Debian's python3 keeps ensurepip in a package of its own.
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || { log "python3 -m venv failed"; exit 2; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2
    python3 -m venv --clear "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$stamp"
fi

gateway="$ROOT/target/release/gateway"
[[ -x "$gateway" ]] || { log "no $gateway: cargo build --release -p gateway"; exit 2; }
export FUZZ_TICKET FUZZ_ADMIN_TOKEN
FUZZ_TICKET="$("$gateway" mint --user "$((900000000 + RANDOM))")"
FUZZ_ADMIN_TOKEN="${SECKILL_ADMIN_TOKEN:-dev-admin-token-change-me}"

mkdir -p "$OUT"
cd "$OUT"
SEED="${FUZZ_SEED:-20261207}"
log "fuzzing $URL and $FUZZ_INTERNAL_URL ($EXAMPLES examples per operation, at most ${MAX_TIME}s, seed $SEED)"
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$HERE" "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" run "$ROOT/gateway/openapi.json" \
  --url "$URL" \
  --max-examples "$EXAMPLES" \
  --max-time "$MAX_TIME" \
  --workers 2 \
  --request-timeout 15 \
  --seed "$SEED" \
  --no-color \
  --report junit --report-dir "$OUT"
