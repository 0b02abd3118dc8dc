"""JobSpec without a database: the documented example and its defaults, every bound, and
the request hash that idempotent submits compare."""
from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from drtrain.jobs.service import request_hash, with_server_defaults
from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec, spec_to_dict
from drtrain.kit.settings import Settings
from tests.factories import spec_with


def test_minimal_spec_is_defaulted_to_the_documented_example() -> None:
    stored = spec_to_dict(with_server_defaults(JobSpec(dataset_id="builtin:digits"),
                                               Settings(max_attempts=3)))
    expected = copy.deepcopy(JOB_SPEC_EXAMPLE)
    # The stored spec also spells out the defaults the example leaves implicit.
    expected["pretrain"]["dr"]["normalize"] = "sum"
    assert stored == expected


def test_example_round_trips() -> None:
    spec = JobSpec.model_validate(JOB_SPEC_EXAMPLE)
    assert JobSpec.model_validate(spec_to_dict(spec)) == spec


@pytest.mark.parametrize("path, value", [
    (("model", "hidden_layers"), []),
    (("model", "hidden_layers"), [10] * 9),
    (("model", "hidden_layers"), [8193]),
    (("model", "visible_units"), "binary"),
    (("pretrain", "epochs"), 1001),
    (("pretrain", "batch_size"), 0),
    (("pretrain", "learning_rate"), 0.0),
    (("pretrain", "learning_rate"), 10.5),
    (("pretrain", "cd_k"), 51),
    (("pretrain", "momentum"), 1.0),
    (("pretrain", "dr", "divergence"), "kl"),
    (("pretrain", "dr", "pairs"), {"sample": 0}),
    (("pretrain", "dr", "pairs"), {"sample": 1025}),
    (("pretrain", "dr", "pairs"), "some"),
    (("finetune", "dr", "distance"), "manhattan"),
    (("finetune", "dr", "layers"), [2]),  # only 2 hidden layers in the example
    (("finetune", "activation"), "gelu"),
    (("seed",), -1),
    (("seed",), 2**31),
    (("device",), "tpu"),
    (("max_runtime_seconds",), 604801),
    (("max_attempts",), 11),
    (("validation_fraction",), 0.6),
    (("surprise",), 1),
])
def test_out_of_bounds_values_are_rejected(path: tuple[str, ...], value: object) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec_with(path, value))


def test_pretrain_and_finetune_cannot_both_be_null() -> None:
    with pytest.raises(ValidationError, match="both"):
        JobSpec(dataset_id="x", pretrain=None, finetune=None)


def test_optional_sections_may_be_null_or_off() -> None:
    spec = JobSpec.model_validate({"dataset_id": "x", "pretrain": None,
                                   "finetune": {"dr": None}, "device": "cuda:1"})
    assert spec.pretrain is None and spec.finetune is not None and spec.finetune.dr is None
    sampled = JobSpec.model_validate({"dataset_id": "x", "pretrain": {"dr": {"pairs": {"sample": 8}}}})
    assert sampled.pretrain.dr.pairs.sample == 8


def test_parameter_count_includes_input_and_head() -> None:
    spec = JobSpec(dataset_id="x", model={"hidden_layers": [10, 5]})
    assert spec.parameter_count(64, 3) == (64 * 10 + 10) + (10 * 5 + 5) + (5 * 3 + 3)
    no_head = JobSpec(dataset_id="x", model={"hidden_layers": [10]}, finetune=None)
    assert no_head.parameter_count(64, 3) == 64 * 10 + 10


def test_request_hash_ignores_key_order_but_not_values() -> None:
    a = spec_to_dict(JobSpec(dataset_id="x", seed=1))
    b = dict(reversed(list(a.items())))
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) != request_hash(spec_to_dict(JobSpec(dataset_id="x", seed=2)))
