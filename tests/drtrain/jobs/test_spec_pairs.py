"""A JobSpec's ``pairs``: "all" or {"sample": K}. A value of neither shape is one error in
words (tests/api/test_union_details.py: the API names an object's own errors)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from drtrain.jobs.spec import JobSpec, SampledPairs
from drtrain.kit.errors import validation_message


@pytest.mark.parametrize("pairs, said", [
    (16, 'must be "all" or {"sample": K} (K partners per row, 1 to 1024); got 16'),
    ("al", 'must be "all" or {"sample": K} (K partners per row, 1 to 1024); got \'al\''),
])
def test_a_pairs_of_neither_shape_is_one_error_in_words(pairs: object, said: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"dataset_id": "builtin:digits", "pretrain": {"dr": {"pairs": pairs}}})
    [error] = info.value.errors()  # one error, not one per branch of the union
    assert error["loc"] == ("pretrain", "dr", "pairs")
    assert validation_message(error) == said


def test_both_shapes_of_pairs_still_parse() -> None:
    for pairs, expected in (("all", "all"), ({"sample": 4}, SampledPairs(sample=4))):
        spec = JobSpec.model_validate({"dataset_id": "builtin:digits",
                                       "finetune": {"dr": {"pairs": pairs}}})
        assert spec.finetune.dr.pairs == expected
