"""schemathesis hooks for gateway/fuzz/run.sh (loaded through SCHEMATHESIS_HOOKS).

POST /admin/sales refuses (400) a sale whose `end_ms` is not after its `start_ms`:
openapi.json says so, but a constraint between two fields is beyond JSON Schema, so a
generated body that breaks only it would count as "schema-valid data refused". Such
bodies get their bounds swapped (or `end_ms` moved one past `start_ms`); every other
value, valid or deliberately invalid, is sent as generated.
"""

import schemathesis

I64_MAX = 2**63 - 1


@schemathesis.hook("map_case").apply_to(method="POST", path="/admin/sales")
def sale_ends_after_it_starts(ctx, case):
    body = case.body
    if not isinstance(body, dict):
        return case
    start, end = body.get("start_ms"), body.get("end_ms")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
    if ints and end <= start:
        if end < start:
            body["start_ms"], body["end_ms"] = end, start
        elif start < I64_MAX:
            body["end_ms"] = start + 1
        else:
            body["start_ms"] = start - 1
    return case
