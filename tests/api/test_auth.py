"""API keys at the API: a bearer header (any case of the scheme) on every route, none on the
ops routes, and the scheme in the OpenAPI document."""
from __future__ import annotations


def test_routes_accept_the_key_in_a_bearer_header(client, auth_a, auth_b):
    assert client.get("/v1/datasets", headers=auth_a).status_code == 200
    assert client.get("/v1/datasets", headers=auth_b).status_code == 200
    scheme_lower = {"Authorization": auth_a["Authorization"].replace("Bearer", "bearer")}
    assert client.get("/v1/datasets", headers=scheme_lower).status_code == 200


def test_ops_routes_need_no_key(client):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_openapi_documents_bearer_auth(client):
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())
    upload = doc["paths"]["/v1/datasets"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"401", "413", "422"} <= set(upload["responses"])
