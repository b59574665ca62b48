"""Schema-driven fuzzing: every endpoint, as its OpenAPI schema describes it.

Schemathesis reads ``/openapi.json`` from a real server process and, for each
operation, generates requests that fit the schema (positive) and requests
that break it (negative); every answer must be one the schema documents,
shaped as it says, never a 5xx, and a request that breaks the schema must be
refused. It found two 500s (ids and offsets beyond SQLite's 64-bit integers)
and a schema looser than the validation (any string as a job type).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from schemathesis.core.result import Ok

from ._service_server import ServerProcess, server_args, serving


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: the fuzzer fills its pools with odd jobs."""
    args = server_args("low=2:10,normal=4,high=8,urgent=1:1", "--grace-period", "1")
    with serving(tmp_path_factory.mktemp("schema"), *args) as process:
        yield process


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_every_endpoint_answers_as_its_schema_says(
    api_server: ServerProcess, mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the schema itself is valid
        operations.append(result.ok())
    assert len(operations) == 12  # with GET /schedules
    for operation in operations:
        inputs = (operation.body, operation.query, operation.path_parameters)
        if mode is schemathesis.GenerationMode.NEGATIVE and not any(map(len, inputs)):
            continue  # takes nothing, so nothing can break its schema

        @given(case=operation.as_strategy(mode))
        def answers_as_documented(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate()

        answers_as_documented()
