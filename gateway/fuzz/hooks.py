"""schemathesis hooks for gateway/fuzz/run.sh (loaded through SCHEMATHESIS_HOOKS).

POST /admin/sales refuses (400) a sale whose `end_ms` is not after its `start_ms`:
openapi.json says so, but a constraint between two fields is beyond JSON Schema, so a
generated body that breaks only it would count as "schema-valid data refused". Such
bodies get their bounds swapped (or `end_ms` moved one past `start_ms`), which keeps
every value, valid or deliberately invalid, as generated.

Half of the valid sales are also made open now, so that the stateful phase (links:
sale → token → order → status, pay) reaches the purchase path instead of 425 and 410.

The gateway serves two listeners: the paths whose own `servers` do not include the
document's (`/admin/*`, `/metrics`, the provider's callback) are served on the internal
one only. `--url` gives every operation the public listener's URL; those operations are
sent to FUZZ_INTERNAL_URL instead (run.sh sets it from GATEWAY_ADMIN_URL).
"""

import os
import random
import time

import schemathesis
from schemathesis import GenerationMode

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def _i64(v):
    return isinstance(v, int) and not isinstance(v, bool) and I64_MIN <= v <= I64_MAX


INTERNAL_URL = os.environ.get("FUZZ_INTERNAL_URL")


@schemathesis.hook
def before_init_operation(ctx, operation):
    """An operation served on the internal listener only is sent there."""
    raw = operation.schema.raw_schema
    public = {s["url"] for s in raw.get("servers", [])}
    own = raw["paths"].get(operation.path, {}).get("servers")
    if own and not public.intersection(s["url"] for s in own):
        if not INTERNAL_URL:
            raise RuntimeError(f"{operation.path} is served on the internal listener: set FUZZ_INTERNAL_URL")
        operation.base_url = INTERNAL_URL


@schemathesis.hook("map_case").apply_to(method="POST", path="/admin/sales")
def sale_ends_after_it_starts(ctx, case):
    body = case.body
    if not isinstance(body, dict):
        return case
    start, end = body.get("start_ms"), body.get("end_ms")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        return case
    if end < start:
        body["start_ms"], body["end_ms"] = end, start
    elif end == start:
        if start < I64_MAX:
            body["end_ms"] = start + 1
        else:
            body["start_ms"] = start - 1
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and _i64(start) and _i64(end) and random.random() < 0.5:
        now = int(time.time() * 1000)
        body["start_ms"], body["end_ms"] = now - 1000, now + 3_600_000
    return case
