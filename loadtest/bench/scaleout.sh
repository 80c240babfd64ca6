#!/usr/bin/env bash
# Scale-out of one hot sale over Redis Cluster masters (issue 13, item 7), in one run:
# for 1, 2 and 3 masters, a fresh cluster of its own (stackctl::redis_cluster; under
# .run/bench-cluster/mM-rR, ports 21601.. without replicas, 21701.. with one replica
# per master; stopped afterwards), one sale with 64 stock buckets ({S#b} hash tags
# spread over the masters), 256 buyers on the gateway's pipe (4 connections per master)
# buying with distinct users (spread over the home buckets), twice the stock they buy,
# so it never sells out while measured. Three series:
#   A. masters only (no replicas, no WAIT): what sharding alone gives;
#   B. one replica per master and WAIT 1 behind each batch of purchases (the gateway's
#      defaults on a cluster);
#   C. one replica per master, no WAIT: B ÷ C is what WAIT costs with its lanes
#      (purchases on half of a master's connections; the same processes on the same
#      cores), B ÷ A what the replicas and WAIT cost together.
#   loadtest/bench/scaleout.sh [purchases=100000] [out-dir]
# BENCH_CLUSTER_PORT (default 21601): the clusters' first port (masters M with R replicas
# from BENCH_CLUSTER_PORT + 100·R + 10·(M-1) up; each node's cluster bus 10000 higher,
# best below the ephemeral range, 32768 on Linux), to run beside another bench's clusters.
# Reports purchases/s and its ratio to 1 master, Redis CPU per purchase (used_cpu_user
# + used_cpu_sys deltas summed over the masters / purchases; replicas apart), each
# master's share and CPU per purchase it served, and what that predicts with one
# machine per shard: the busiest master saturating a core of its own,
# purchases/s ≈ 1 / (its CPU per purchase). Writes <out>/scaleout.{txt,md,json}
# (run.sh folds them into its summary).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
N="${1:-100000}"
PORT="${BENCH_CLUSTER_PORT:-21601}"
case "$PORT" in ''|*[!0-9]*) echo "[bench] error: BENCH_CLUSTER_PORT must be a port number, got '$PORT'" >&2; exit 2 ;; esac
# The clusters take up to PORT + 130 and their buses 10000 above: keep both below the
# ephemeral range (32768).
if [ "$PORT" -lt 1024 ] || [ "$PORT" -gt 22600 ]; then
  echo "[bench] error: BENCH_CLUSTER_PORT must be 1024..22600 (cluster buses are 10000 higher), got $PORT" >&2
  exit 2
fi
cd "$ROOT"
OUT="${2:-.run/bench/scaleout-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
log() { echo "[bench] $*" >&2; }
cargo build --release -q -p gateway --example purchase_bench \
  || { log "error: building purchase_bench failed"; exit 1; }
cut -d' ' -f1-3 /proc/loadavg >"$OUT/scaleout_load_start.txt"
{
  target/release/examples/purchase_bench "$N" --scaleout 1,2,3 --replicas 0 --buckets 64 --port "$PORT"
  target/release/examples/purchase_bench "$N" --scaleout 1,2,3 --replicas 1 --buckets 64 --port "$PORT"
  target/release/examples/purchase_bench "$N" --scaleout 1,2,3 --replicas 1 --wait 0 --buckets 64 --port "$PORT"
} >"$OUT/scaleout.txt" 2>"$OUT/scaleout.err"
cut -d' ' -f1-3 /proc/loadavg >"$OUT/scaleout_load_end.txt"
python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
def read(name):
    try:
        return open(f"{out}/{name}").read()
    except OSError:
        return ""
txt = read("scaleout.txt")
res = {"load_start": read("scaleout_load_start.txt").strip(),
       "load_end": read("scaleout_load_end.txt").strip(), "series": {}}
tables, notes = {}, []
for m in re.finditer(r"^scaleout masters=(\d+): (.*)$", txt, re.M):
    masters, rest = int(m.group(1)), m.group(2)
    if rest.startswith("unmeasured"):
        notes.append(f"- {masters} master(s): {rest}")
        continue
    f = dict(re.findall(r"(\S+) (\S+)", rest.replace("purchases/s", "rate")))
    series = ("masters_only" if int(f["replicas"]) == 0
              else "replica_and_wait" if int(f["wait"]) > 0 else "replica_no_wait")
    runs = res["series"].setdefault(series, [])
    rate = float(f["rate"])
    share = [float(x) for x in f["share"].split(",")]
    served = [float(x) for x in f["cpu_us_per_served"].split(",")]
    runs.append({"masters": masters, "purchases_per_s": round(rate),
         "redis_cpu_us_per_purchase": float(f["cpu_us_per_purchase"]),
         "replica_cpu_us_per_purchase": max(0.0, float(f["replica_cpu_us_per_purchase"])),
         "client_cpu_us_per_purchase": float(f["client_cpu_us_per_purchase"]),
         "evalsha_usec_per_call": float(f["evalsha_usec_per_call"]),
         "purchases_per_read": float(f["cmds_per_read"]),
         "master_share": share, "master_cpu_us_per_purchase_served": served,
         "predicted_purchases_per_s_one_machine_per_shard": float(f["predicted_per_machine_per_shard"]),
         "sold": int(f["sold"]), "failed": int(f["failed"]), "wait_replicas": int(f["wait"]),
         "replica_nodes": int(f["replicas"])})
titles = {"masters_only": "A. masters only (no replicas, no WAIT)",
          "replica_and_wait": "B. one replica per master, WAIT 1 behind each batch of purchases (the gateway's cluster default)",
          "replica_no_wait": "C. one replica per master, no WAIT"}
head = re.search(r"^scale-out: (.*?), \d+ replica", txt, re.M)
md = ("## Scale-out: one hot sale over 1, 2, 3 Redis Cluster masters\n\n"
      f"{head.group(1) if head else ''}; machine load average (1/5/15 min) "
      f"{res['load_start']} at the start, {res['load_end']} at the end.\n")
for series, runs in res["series"].items():
    one = next((r for r in runs if r["masters"] == 1), None)
    md += (f"\n{titles[series]}:\n\n"
           "| masters | purchases/s | ratio to 1 master | Redis CPU µs per purchase (masters) | purchases per master | "
           "µs per purchase served, per master | purchases per Redis read | replicas CPU µs per purchase | "
           "client CPU µs per purchase | predicted purchases/s, one machine per shard (ratio) |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n")
    for r in runs:
        if one:
            r["ratio_to_1_master"] = round(r["purchases_per_s"] / one["purchases_per_s"], 2)
            r["predicted_ratio_to_1_master"] = round(
                r["predicted_purchases_per_s_one_machine_per_shard"]
                / one["predicted_purchases_per_s_one_machine_per_shard"], 2)
        pct = "/".join(f"{s*100:.0f}%" for s in r["master_share"])
        per = "/".join(f"{s:.1f}" for s in r["master_cpu_us_per_purchase_served"])
        ratio = f"{r['ratio_to_1_master']:.2f}" if "ratio_to_1_master" in r else "—"
        pratio = f"{r['predicted_ratio_to_1_master']:.2f}" if "predicted_ratio_to_1_master" in r else "—"
        md += (f"| {r['masters']} | {r['purchases_per_s']} | {ratio} | "
               f"{r['redis_cpu_us_per_purchase']:.1f} | {pct} | {per} | {r['purchases_per_read']:.1f} | "
               f"{r['replica_cpu_us_per_purchase']:.1f} | {r['client_cpu_us_per_purchase']:.1f} | "
               f"{r['predicted_purchases_per_s_one_machine_per_shard']:.0f} ({pratio}) |\n")
md += ("\nOn this machine every Redis process, the replicas and the client share 2 cores, so the "
       "measured curve is capped by the machine, not by Redis. The prediction gives each master a "
       "core of its own: the busiest master saturates first, at 1 / (its CPU per purchase over all "
       "purchases); the client side (the gateways) scales out separately.\n")
# What WAIT costs: B against C (same processes) and against A, measured and predicted.
by = {k: {r["masters"]: r for r in v} for k, v in res["series"].items()}
b, c, a = (by.get(k, {}) for k in ("replica_and_wait", "replica_no_wait", "masters_only"))
res["wait_ratio"] = []
if b:
    md += ("\nWAIT's cost (B with WAIT ÷ the same cluster without it, C; and ÷ masters only, A), "
           "measured on this machine and predicted with one machine per shard:\n\n"
           "| masters | B ÷ C measured | B ÷ C predicted | B ÷ A measured | B ÷ A predicted |\n|---|---|---|---|---|\n")
    pk = "predicted_purchases_per_s_one_machine_per_shard"
    for m in sorted(b):
        def q(ref, key):
            return round(b[m][key] / ref[m][key], 2) if m in ref and ref[m][key] else None
        row = {"masters": m, "vs_no_wait": q(c, "purchases_per_s"), "vs_no_wait_predicted": q(c, pk),
               "vs_masters_only": q(a, "purchases_per_s"), "vs_masters_only_predicted": q(a, pk)}
        res["wait_ratio"].append(row)
        f = lambda v: "—" if v is None else f"{v:.2f}"
        md += (f"| {m} | {f(row['vs_no_wait'])} | {f(row['vs_no_wait_predicted'])} | "
               f"{f(row['vs_masters_only'])} | {f(row['vs_masters_only_predicted'])} |\n")
if notes:
    md += "\nNot measured:\n" + "\n".join(notes) + "\n"
json.dump(res, open(f"{out}/scaleout.json", "w"), indent=2)
open(f"{out}/scaleout.md", "w").write(md)
print(md)
PY
log "scale-out written to $OUT/scaleout.md"
