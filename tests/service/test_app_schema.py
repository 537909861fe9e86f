"""Schemathesis over the server's own OpenAPI schema (bounded examples): no input makes it answer 5xx.

The only 5xx the contract allows are 503 (no model / overloaded / a pinned version newer than the replica
holds, with Retry-After) and a 504 for a request that asked for a deadline; both are checked to be exactly
that, everything else must be < 500. The served model is loaded and the load is light, so the only 503 the
generated requests can get is the pinned newer version.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from .conftest import Running


def test_no_server_errors(server: Running) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/act" for op in operations)
    act_statuses: set[int] = set()

    def verify(case: schemathesis.Case) -> None:
        response = case.call()
        if case.path == "/act":
            act_statuses.add(response.status_code)
        if response.status_code == 504:
            assert isinstance(case.body, dict) and case.body.get("deadline_ms") is not None, response.text
        elif response.status_code == 503 and case.path == "/act":
            assert isinstance(case.body, dict) and response.headers.get("retry-after") == "1"
            pinned = case.body.get("model")
            assert isinstance(pinned, str) and pinned.isascii() and pinned.isdigit(), response.text
            assert int(pinned) > 1 and "not loaded on this replica yet" in response.text
        else:
            assert response.status_code < 500, f"{case.method} {case.path} {case.body!r} -> {response.text}"

    for op in operations:
        fuzz = settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        fuzz(given(case=op.as_strategy())(verify))()
        if op.path == "/act":
            # Hypothesis may spend every example on bodies that pin a `model` (409) or break the schema (422):
            # one well-formed and one malformed body always go through the same checks.
            verify(op.Case(body={"state": [0.1, 0.2, 0.3]}, media_type="application/json"))
            verify(op.Case(body={"state": [0.1, "x", 0.3]}, media_type="application/json"))
    assert {200, 422} <= act_statuses, f"/act was not exercised both ways: {act_statuses}"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
