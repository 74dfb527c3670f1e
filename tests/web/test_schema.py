"""The OpenAPI schema, run property-based by schemathesis against a real server: no 5xx.

Driven by hand (one hypothesis run per operation) rather than through
schemathesis' pytest plugin, which does not yet support this pytest.
"""

from __future__ import annotations

import sys
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from outspool import Outspool
from tests.web.conftest import Served

EXAMPLES = 25  # per operation: bounded, the whole run takes seconds


def test_no_operation_answers_5xx(served: Served, spool: Outspool) -> None:
    spool.run([sys.executable, "-c", "print('some output'); print('x' * 100)"])
    schema = schemathesis.openapi.from_url(served.url + "api/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        no_server_error()
        tested.append(operation.label)
    assert len(tested) == 13, tested  # with DELETE /api/executions/{id}
