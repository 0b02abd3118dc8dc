"""The OpenAPI document as a contract a generated client and a fuzzer can trust: every
status each operation can answer, each error problem+json with the Problem schema,
readable operationIds, typed job fields, response headers, binary downloads, and a 405
whose Allow names every method of the path. The document must also be valid OpenAPI 3.1."""
from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from api.schemas.jobs import JOB_RESULT_SCHEMA
from drtrain.jobs.spec import JobSpec
from drtrain.kit.errors import PROBLEM_TYPES
from drtrain.kit.models import JOB_STATUSES, PHASES
from scripts import gen_api_docs

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
DOWNLOADS = [("get", "/v1/jobs/{job_id}/model"),
             ("get", "/v1/jobs/{job_id}/checkpoints/{checkpoint_id}")]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return gen_api_docs.openapi()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def _v1(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for m, p, op in _operations(doc) if p.startswith("/v1/")]


def _component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]


def _refs(node: dict[str, Any]) -> list[str]:
    """The components a property points at, through allOf/anyOf."""
    found = [node["$ref"]] if "$ref" in node else []
    for key in ("allOf", "anyOf"):
        for sub in node.get(key, []):
            found += _refs(sub)
    return [ref.rsplit("/", 1)[-1] for ref in found]


def test_the_document_is_valid_openapi_3_1(doc) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_error_response_is_problem_json_with_the_problem_schema(doc) -> None:
    wrong = [(m, p, code) for m, p, op in _operations(doc)
             for code, response in op["responses"].items()
             if code[0] in "45" and response.get("content") != PROBLEM]
    assert wrong == []


def test_every_authenticated_operation_documents_what_its_dependencies_answer(doc) -> None:
    missing = []
    for method, path, op in _v1(doc):
        assert op.get("security"), f"{method} {path} is not secured"
        expected = {"401", "429", "500"}
        if "{" in path:
            expected |= {"404", "422"}
        if op.get("parameters") or op.get("requestBody"):
            expected.add("422")
        missing += [(method, path, code) for code in sorted(expected - set(op["responses"]))]
    assert missing == []


def test_every_operation_documents_500(doc) -> None:
    assert [(m, p) for m, p, op in _operations(doc) if "500" not in op["responses"]] == []


def test_the_upload_documents_413_and_507(doc) -> None:
    assert {"413", "507", "408"} <= set(doc["paths"]["/v1/datasets"]["post"]["responses"])


def test_429_and_503_declare_retry_after(doc) -> None:
    answers = [(m, p, code, response) for m, p, op in _operations(doc)
               for code, response in op["responses"].items() if code in ("429", "503")]
    assert {code for *_, code, _ in answers} == {"429", "503"}
    assert [(m, p, code) for m, p, code, response in answers
            if "Retry-After" not in response.get("headers", {})] == []


def test_operation_ids_are_unique_camel_case(doc) -> None:
    ids = [op.get("operationId", "") for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", i)] == []
    assert {"listJobs", "getJob", "submitJob", "cancelJob", "downloadModel", "headModel",
            "uploadDataset", "createSweep"} <= set(ids)


def test_every_operation_has_one_of_the_documented_tags(doc) -> None:
    tags = {t["name"] for t in doc["tags"]}
    assert [(m, p) for m, p, op in _operations(doc) if len(op.get("tags", [])) != 1
            or op["tags"][0] not in tags] == []


def test_job_fields_are_typed(doc) -> None:
    job = _component(doc, "JobOut")["properties"]
    assert _refs(job["spec"]) == ["JobSpec"]
    assert _refs(_component(doc, "JobListItem")["properties"]["spec"]) == ["JobSpec"]
    assert _refs(_component(doc, "SweepOut")["properties"]["base"]) == ["JobSpec"]
    assert _refs(job["result"]) == ["JobResult"]
    assert _component(doc, "JobResult") == JOB_RESULT_SCHEMA
    assert job["status"]["enum"] == list(JOB_STATUSES)
    assert [s for s in job["phase"]["anyOf"] if "enum" in s][0]["enum"] == list(PHASES)
    assert _component(doc, "Problem")["properties"]["type"]["enum"] == list(PROBLEM_TYPES)


@pytest.mark.parametrize("model", ["JobOut", "JobListItem"])
def test_fields_always_sent_are_required(doc, model: str) -> None:
    required = set(_component(doc, model)["required"])
    assert {"name", "tags", "warnings", "status", "result"} <= required
    assert ("spec" in required) == (model == "JobOut")  # list rows carry it only on request


@pytest.mark.parametrize("method, path, code, header", [
    ("post", "/v1/jobs", "202", "Location"), ("post", "/v1/datasets", "202", "Location"),
    ("post", "/v1/sweeps", "202", "Location"), ("get", "/v1/jobs/{job_id}", "200", "ETag"),
    ("get", "/v1/jobs", "200", "ETag"), ("get", "/v1/jobs/{job_id}/model", "200", "ETag"),
    ("get", "/v1/jobs/{job_id}/model", "206", "Content-Range"),
    ("get", "/v1/jobs/{job_id}/model", "200", "Accept-Ranges"),
    ("get", "/v1/jobs/{job_id}/model", "307", "Location"),
    ("head", "/v1/jobs/{job_id}/model", "200", "ETag")])
def test_response_headers_are_declared(doc, method: str, path: str, code: str,
                                       header: str) -> None:
    assert header in doc["paths"][path][method]["responses"][code].get("headers", {})


@pytest.mark.parametrize("method, path", DOWNLOADS)
def test_downloads_are_binary_with_206_304_307(doc, method: str, path: str) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert {"200", "206", "304", "307", "416"} <= set(responses)
    for code in ("200", "206"):
        schema = responses[code]["content"]["application/octet-stream"]["schema"]
        assert schema == {"type": "string", "format": "binary"}


def test_head_on_the_model_is_documented_without_a_body(doc) -> None:
    head = doc["paths"]["/v1/jobs/{job_id}/model"]["head"]
    assert head["summary"] and "content" not in head["responses"]["200"]


def _methods_by_path(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {m.upper() for m in item} for path, item in doc["paths"].items()}


def test_a_405_allows_every_method_of_the_path(client, doc) -> None:
    ids = {"{job_id}": "a" * 32, "{dataset_id}": "b" * 32, "{sweep_id}": "c" * 32,
           "{checkpoint_id}": "d" * 32}
    for path, methods in _methods_by_path(doc).items():
        url = path
        for template, value in ids.items():
            url = url.replace(template, value)
        resp = client.request("PATCH", url)
        assert resp.status_code == 405, (path, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert set(resp.headers["allow"].split(", ")) == methods, path


@pytest.mark.parametrize("method, url, allow", [
    ("PUT", "/v1/datasets", "GET, POST"),
    ("PUT", "/v1/jobs/" + "a" * 32, "DELETE, GET"),
    ("POST", "/v1/jobs/" + "a" * 32 + "/model", "GET, HEAD"),
])
def test_known_405s_name_the_full_method_set(client, method: str, url: str,
                                             allow: str) -> None:
    resp = client.request(method, url)
    assert resp.status_code == 405
    assert resp.headers["allow"] == allow


def test_the_job_spec_states_every_default_its_models_have(doc) -> None:
    """A null default is a default: feature DR is off unless asked for. A reader of the
    document (the web app's form) that finds no default takes the section's own defaults."""
    own = JobSpec.model_json_schema()
    for name, model in [("JobSpec", own), *own["$defs"].items()]:
        served = _component(doc, name)["properties"]
        for field, prop in model["properties"].items():
            if "default" in prop:
                assert served[field].get("default", "missing") == prop["default"], (name, field)
    assert _component(doc, "FinetuneSpec")["properties"]["dr"]["default"] is None
