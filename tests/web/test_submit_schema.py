"""The submit form keeps no copy of the JobSpec's choices or defaults: it reads them from the
JobSpec schema in /openapi.json (web/src/schema.ts). Its selects offer exactly each field's enum
and start at its default, and a schema that changes changes the form.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from playwright.sync_api import Page, Route, expect

from tests.web.server import Server

if TYPE_CHECKING:
    from tests.web.conftest import Recorder

# The JobSpec's choice fields the form shows as selects.
CHOICE_FIELDS = {"model.visible_units", "pretrain.dr.divergence", "pretrain.dr.normalize",
                 "finetune.optimizer", "finetune.activation", "finetune.init",
                 "finetune.dr.distance", "finetune.dr.normalize", "precision"}
# Selects that are not a spec field's enum: datasets come from the server's list, and pairs
# switches between "all" and a {"sample": K} object.
NOT_ENUMS = {"dataset_id", "test_dataset_id", "pretrain.dr.pairs", "finetune.dr.pairs"}


def openapi(server: Server) -> dict[str, Any]:
    with server.client() as c:
        return c.get("/openapi.json").json()


def _object(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref") or next((m["$ref"] for m in node.get("anyOf", []) if "$ref" in m), None)
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else node


def field_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    node = doc["components"]["schemas"]["JobSpec"]
    for key in path.split("."):
        node = _object(doc, node)["properties"][key]
    return node


def form_selects(page: Page) -> dict[str, dict[str, Any]]:
    """Every select of the form: its options and its current value, by field name."""
    return page.locator("#submit-form select[name]").evaluate_all(
        "ss => Object.fromEntries(ss.map(s => [s.name,"
        " {options: [...s.options].map(o => o.value), value: s.value}]))")


def open_form_with_feature_dr(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/#/submit")
    page.check('input[name="finetune.dr.enabled"]')  # off by default: its selects appear now
    expect(page.locator('select[name="finetune.dr.distance"]')).to_be_visible()


def test_form_selects_offer_the_schemas_enums_at_its_defaults(page: Page, server: Server) -> None:
    doc = openapi(server)
    open_form_with_feature_dr(page, server)
    selects = form_selects(page)
    assert set(selects) - NOT_ENUMS == CHOICE_FIELDS
    for path in CHOICE_FIELDS:
        schema = field_schema(doc, path)
        assert selects[path] == {"options": schema["enum"], "value": schema["default"]}, path


def _drifted(doc: dict[str, Any]) -> dict[str, Any]:
    """The schema of a server with a fifth divergence, made the default, and a third distance."""
    schemas = doc["components"]["schemas"]
    divergence = schemas["PretrainDR"]["properties"]["divergence"]
    divergence["enum"] = [*divergence["enum"], "renyi"]
    divergence["default"] = "renyi"
    distance = schemas["FinetuneDR"]["properties"]["distance"]
    distance["enum"] = [*distance["enum"], "manhattan"]
    return doc


def test_a_changed_schema_changes_the_form(page: Page, server: Server) -> None:
    drifted = _drifted(openapi(server))

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(drifted))

    page.route("**/openapi.json", serve)
    open_form_with_feature_dr(page, server)
    selects = form_selects(page)
    assert selects["pretrain.dr.divergence"] == {
        "options": field_schema(drifted, "pretrain.dr.divergence")["enum"], "value": "renyi"}
    assert selects["finetune.dr.distance"]["options"][-1] == "manhattan"


def test_without_the_schema_the_form_says_why(page: Page, server: Server,
                                              recorder: Recorder) -> None:
    recorder.allow(r"status of 503")
    page.route("**/openapi.json", lambda route: route.fulfill(status=503, body="down"))
    page.goto(f"{server.url}/#/submit")
    expect(page.locator("#schema-error")).to_contain_text("503")
    expect(page.locator("#submit-form")).to_have_count(0)
