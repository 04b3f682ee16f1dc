"""schemathesis hooks for tests/contract/run_schemathesis.sh (SCHEMATHESIS_HOOKS=hooks, PYTHONPATH=tests/contract)."""

import re
import uuid
from datetime import datetime

import schemathesis

# A key the document accepts (components/parameters/IdempotencyKey).
VALID_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """A fresh Idempotency-Key for every request.

    Reason: the fuzzer reuses one generated key value for different requests; the server
    then answers 422 ("was already used for another request"), which is what the IETF
    idempotency-key draft asks for and what docs/API-CLIENTS.md promises, but not what
    `positive_data_acceptance` expects of a schema-valid request. A key the document
    refuses (a negative case) is left as the fuzzer made it, so its rejection is still
    checked.
    """
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            value = headers[name]
            if isinstance(value, str) and VALID_KEY.match(value):
                headers[name] = "st-" + uuid.uuid4().hex
    case.headers = headers


def _time(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@schemathesis.hook
def map_query(ctx, query):
    """`since` not after `until` (GET /api/v1/admin/events, /admin/users/{id}/history).

    Reason: "since must not be after until" (422) is a rule between two parameters, which
    an OpenAPI document cannot state; a pair the fuzzer draws in the wrong order is put in
    order. A value that is not a time (a negative case) is left as it is.
    """
    if isinstance(query, dict):
        since, until = _time(query.get("since")), _time(query.get("until"))
        if since and until:
            try:
                wrong_order = since > until
            except TypeError:  # one with an offset, one without
                wrong_order = False
            if wrong_order:
                query["since"], query["until"] = query["until"], query["since"]
    return query
