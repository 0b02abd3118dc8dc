"""A 422's detail names the union branch the input was meant for: an object where "all" or
{"sample": K} belongs is about ``sample``, not about the "all" that pydantic lists first."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("pairs, said", [
    ({"sample": 0}, "body.pretrain.dr.pairs.SampledPairs.sample: Input should be greater than "
                    "or equal to 1"),
    ({"sample": "4"}, "body.pretrain.dr.pairs.SampledPairs.sample: Input should be a valid "
                      "integer"),
])
def test_the_api_names_the_error_of_the_object_given(client, auth_a, pairs: object,
                                                     said: str) -> None:  # noqa: ANN001
    resp = client.post("/v1/jobs", headers=auth_a, json={
        "dataset_id": "builtin:digits", "pretrain": {"dr": {"pairs": pairs}}})
    assert resp.status_code == 422 and resp.json()["detail"] == said, resp.text
