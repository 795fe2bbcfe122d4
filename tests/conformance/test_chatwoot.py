"""Chatwoot against its own swagger description, in both directions, with PyPI validators.

``chatwoot/swagger-subset.json`` is the pinned excerpt of Chatwoot's ``swagger/swagger.json``
(Swagger 2.0) that covers every operation the exporter calls; ``openapi-spec-validator`` checks
it is a valid Swagger 2.0 document. The exporter then scrapes every kind of Chatwoot dialog
(and looks up the group names) through a recording proxy in front of the simulator, and:

- every request it made must be an operation of the description: the path template, the
  method, only declared query parameters with values of their declared type and enum (checked
  by ``jsonschema``), and the ``api_access_token`` header its security scheme names;
- every answer the simulator gave must validate against the operation's response schema
  (``jsonschema``, Draft 4: Swagger 2.0's schema dialect).

What the description leaves out or contradicts is compared with Chatwoot's Rails source
instead, transcribed in ``chatwoot/controller-shapes.json`` (our reading of the controllers and
jbuilder views, not an independent oracle), and each deviation is an allow-list entry with its
reason here:

- ``live_reports/grouped_conversation_metrics`` is absent from the description: its query and
  answer are checked against the controller's transcription only (unverifiable by the
  description);
- ``GET inboxes`` is described as a bare array, its jbuilder view renders ``{"payload": [...]}``
  (the exporter reads both);
- a listed conversation's ``timestamp`` is described as a string, its jbuilder renders
  ``last_activity_at.to_i``, an integer; ``waiting_since`` (the oldest waiting) is not in the
  description at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from jsonschema import Draft4Validator, Draft7Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV2SpecValidator

from exporter.simulator import Simulator
from tests.conformance.harness import Recorded, Recorder, decode
from tests.support import ScrapeClient, get_metrics, populate_reach
from tests.test_chatwoot import EVERY_KIND, account_yaml, names
from tests.test_cli import eventually

HERE = Path(__file__).resolve().parent / "chatwoot"
SUBSET = json.loads((HERE / "swagger-subset.json").read_text())
CONTROLLERS = json.loads((HERE / "controller-shapes.json").read_text())["operations"]

# (operation, location of the difference in the answer) -> why the simulator follows the
# source rather than the description there. A location is the JSON path with list indexes
# shown as [].
ANSWER_ALLOW_LIST: dict[tuple[str, str], str] = {
    ("listAllInboxes", ""): (
        "described as an array; inboxes/index.json.jbuilder renders {payload: [...]}"
    ),
    ("conversationList", "data.payload[].timestamp"): (
        "described as a string; _conversation.json.jbuilder renders last_activity_at.to_i"
    ),
}


class AnswerRecorder(Recorder):
    """The harness's recording proxy, keeping each answer's status and body beside its
    request."""

    def __init__(self, target: str, workdir: Path) -> None:
        super().__init__(target, workdir)
        self.answers: list[tuple[Recorded, int, bytes]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # decoded here, as requests answered concurrently are recorded in no set order
        fields = decode(
            request.method,
            request.path,
            request.query_string,
            request.headers,
            await request.read(),
        )
        response = await super()._handle(request)
        assert isinstance(response, web.Response)
        assert isinstance(response.body, bytes)
        self.answers.append((Recorded(None, fields), response.status, response.body))
        return response


def operation_of(method: str, path: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The described operation a request is: its id, its object and all its parameters."""
    for template, item in SUBSET["paths"].items():
        pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            operation = item[method.lower()]
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            return operation["operationId"], operation, parameters
    raise AssertionError(f"{method} {path} is no operation of the description")


def parameter_schema(parameter: dict[str, Any]) -> dict[str, Any]:
    """A query or path parameter as a JSON Schema of its text (Swagger 2.0 simple types)."""
    kind = parameter["type"]
    if kind == "integer":
        return {"type": "string", "pattern": "^-?[0-9]+$"}
    schema: dict[str, Any] = {"type": "string"}
    if "enum" in parameter:
        schema["enum"] = parameter["enum"]
    return schema


def request_problems(fields: dict[str, Any], parameters: list[dict[str, Any]]) -> list[str]:
    """Why a request is not valid for the described operation (empty: it is)."""
    problems = []
    declared = {p["name"]: p for p in parameters if p["in"] == "query"}
    sent = {name[len("query:") :]: v for name, v in fields.items() if name.startswith("query:")}
    for name, occurrences in sent.items():
        if name not in declared:
            problems.append(f"query parameter {name} is not described")
            continue
        for items in occurrences:
            for error in Draft4Validator(parameter_schema(declared[name])).iter_errors(
                ",".join(items)
            ):
                problems.append(f"query parameter {name}: {error.message}")
    problems += [
        f"required query parameter {p['name']} missing"
        for p in declared.values()
        if p.get("required") and p["name"] not in sent
    ]
    scheme = SUBSET["securityDefinitions"]["userApiKey"]
    if f"header:{scheme['name'].lower()}" not in fields:
        problems.append(f"no {scheme['name']} header")
    return problems


def location(path: Iterator[Any]) -> str:
    return ".".join("[]" if isinstance(part, int) else str(part) for part in path).replace(
        ".[]", "[]"
    )


def answer_problems(operation: str, schema: dict[str, Any], body: Any) -> list[str]:
    """Where an answer breaks its schema, less the allow-listed differences."""
    return [
        f"{location(iter(error.absolute_path)) or '(root)'}: {error.message}"
        for error in Draft4Validator(schema).iter_errors(body)
        if (operation, location(iter(error.absolute_path))) not in ANSWER_ALLOW_LIST
    ]


@pytest.fixture
async def recorded(
    sim: Simulator, scrape_client: ScrapeClient, tmp_path: Path
) -> list[tuple[Recorded, int, bytes]]:
    """Every request and answer of scraping each kind of Chatwoot dialog until the group
    names are in (so the name lists are read too)."""
    populate_reach(sim)
    recorder = AnswerRecorder(sim.chatwoot.url, tmp_path)
    await recorder.start()
    try:
        text = account_yaml(sim, EVERY_KIND).replace(sim.chatwoot.url, recorder.url)
        client = await scrape_client(text)

        async def named() -> bool | None:
            samples = await get_metrics(client)
            return all(names(samples, d) for d in ("by-team", "by-agent", "by-inbox")) or None

        await eventually(named, "the group names")
        return list(recorder.answers)
    finally:
        await recorder.stop()


def test_the_pinned_subset_is_a_valid_swagger_2_document() -> None:
    validate(SUBSET, cls=OpenAPIV2SpecValidator)
    assert SUBSET["info"]["x-excerpt-of"]["commit"] == "2953efeb3a900e0e691035d98556418b0404126f"


async def test_every_request_is_valid_for_the_description_or_the_controller(
    recorded: list[tuple[Recorded, int, bytes]],
) -> None:
    seen: set[str] = set()
    for request, _status, _body in recorded:
        fields = request.fields
        method, path = fields["method"], fields["path"]
        if "/live_reports/" in path:
            shape = CONTROLLERS["grouped_conversation_metrics"]
            query = {k[len("query:") :]: ",".join(v[0]) for k, v in fields.items() if "query:" in k}
            assert list(Draft7Validator(shape["query"]).iter_errors(query)) == []
            assert method == "GET"
            assert "header:api_access_token" in fields
            seen.add("grouped_conversation_metrics")
            continue
        operation, _described, parameters = operation_of(method, path)
        assert request_problems(fields, parameters) == [], (method, path)
        seen.add(operation)
    assert seen == {
        "conversationListMeta",
        "conversationList",
        "grouped_conversation_metrics",
        "list-all-teams",
        "get-account-agents",
        "listAllInboxes",
    }


async def test_every_answer_validates_against_the_response_schema(
    recorded: list[tuple[Recorded, int, bytes]],
) -> None:
    used: set[tuple[str, str]] = set()
    for request, status, raw in recorded:
        assert status == 200
        body = json.loads(raw)
        path = request.fields["path"]
        if "/live_reports/" in path:
            shape = CONTROLLERS["grouped_conversation_metrics"]["response"]
            assert list(Draft7Validator(shape).iter_errors(body)) == []
            continue
        operation, described, _parameters = operation_of(request.fields["method"], path)
        assert answer_problems(operation, described["responses"]["200"]["schema"], body) == []
        used |= {
            (operation, location(iter(error.absolute_path)))
            for error in Draft4Validator(described["responses"]["200"]["schema"]).iter_errors(body)
        }
        if operation in CONTROLLERS:  # where the source says more, or otherwise
            assert list(Draft7Validator(CONTROLLERS[operation]["response"]).iter_errors(body)) == []
    assert used == set(ANSWER_ALLOW_LIST)  # every entry still needed, none more


def test_a_request_off_the_description_is_caught() -> None:
    """The checks can fail: an undeclared parameter, a non-integer id, a missing token."""
    _operation, _described, parameters = operation_of(
        "GET", "/api/v1/accounts/1/conversations/meta"
    )
    fields: dict[str, Any] = {
        "query:status": [["waiting"]],
        "query:inbox_id": [["seven"]],
        "query:per_page": [["50"]],
    }
    assert len(request_problems(fields, parameters)) == 4
    with pytest.raises(AssertionError):
        operation_of("POST", "/api/v1/accounts/1/conversations/meta")


def test_an_answer_off_the_schema_is_caught() -> None:
    _operation, described, _parameters = operation_of(
        "GET", "/api/v1/accounts/1/conversations/meta"
    )
    schema = described["responses"]["200"]["schema"]
    assert answer_problems("conversationListMeta", schema, {"meta": {"all_count": "3"}}) == [
        "meta.all_count: '3' is not of type 'number'"
    ]
    assert list(Draft4Validator(schema).iter_errors(dict(parse_qsl("meta=1")))) != []
