"""A JobSpec's ``pairs``: "all" or {"sample": K}, and its errors said in one sentence."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from drtrain.jobs.spec import JobSpec, SampledPairs
from drtrain.kit.errors import validation_message


def _pairs_error(pairs: object) -> str:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"dataset_id": "builtin:digits", "pretrain": {"dr": {"pairs": pairs}}})
    [error] = info.value.errors()  # one error, not one per branch of the union
    assert error["loc"] == ("pretrain", "dr", "pairs")
    return validation_message(error)


@pytest.mark.parametrize("pairs, said", [
    (16, 'must be "all" or {"sample": K} (K partners per row, 1 to 1024); got 16'),
    ("al", 'must be "all" or {"sample": K} (K partners per row, 1 to 1024); got \'al\''),
    ({"sample": 0}, 'must be "all" or {"sample": K}: sample: Input should be greater than or '
                    "equal to 1"),
    ({"sample": "4"}, 'must be "all" or {"sample": K}: sample: Input should be a valid integer'),
])
def test_a_wrong_pairs_is_one_error_in_words(pairs: object, said: str) -> None:
    assert _pairs_error(pairs) == said


def test_both_shapes_of_pairs_still_parse() -> None:
    for pairs, expected in (("all", "all"), ({"sample": 4}, SampledPairs(sample=4))):
        spec = JobSpec.model_validate({"dataset_id": "builtin:digits",
                                       "finetune": {"dr": {"pairs": pairs}}})
        assert spec.finetune.dr.pairs == expected
