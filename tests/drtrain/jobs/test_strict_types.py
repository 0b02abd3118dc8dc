"""The JobSpec's types are strict, as the OpenAPI document states them: an integer field
takes only an integer, a boolean only true or false, at any depth; a float field still
takes an integer, and a stored spec read back as JSON still parses."""
from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec, spec_to_dict
from drtrain.sweeps.schemas import SweepRequest
from tests.factories import spec_with

WRONG_TYPES = [
    (("seed",), "7"), (("seed",), False), (("seed",), True), (("seed",), 7.0),
    (("max_runtime_seconds",), 3600.0), (("max_attempts",), "3"),
    (("pretrain", "epochs"), "1"), (("pretrain", "epochs"), True), (("pretrain", "epochs"), 1.5),
    (("finetune", "epochs"), "1"), (("finetune", "epochs"), 1.0),
    (("pretrain", "cd_k"), "2"), (("pretrain", "side_rows_per_batch"), "4"),
    (("pretrain", "persistent"), 0), (("pretrain", "persistent"), 1),
    (("pretrain", "persistent"), "true"), (("pretrain", "persistent"), "false"),
    (("model", "hidden_layers", 0), 8.0), (("model", "hidden_layers", 1), "8"),
    (("model", "hidden_layers", 0), True),
    (("validation_fraction",), "0.1"), (("pretrain", "learning_rate"), True),
]


def _bad_spec(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The example with ``value`` at ``path``; a list index replaces one item of a valid list."""
    if isinstance(path[-1], int):
        spec = spec_with(path[:-1], [8, 4])
        node = spec
        for part in path[:-2]:
            node = node[part]
        node[path[-2]][path[-1]] = value
        return spec
    return spec_with(path, value)


@pytest.mark.parametrize("path, value", WRONG_TYPES, ids=lambda v: repr(v))
def test_a_wrong_type_is_refused_naming_the_field(path: tuple[str, ...], value: Any) -> None:
    spec = _bad_spec(path, value)
    for parse in (JobSpec.model_validate, lambda s: JobSpec.model_validate_json(json.dumps(s))):
        with pytest.raises(ValidationError) as info:
            parse(spec)
        [error] = info.value.errors()
        assert error["loc"] == path
        assert error["type"] in {"int_type", "bool_type", "float_type"}


# A choice or an integer: each member of the union reports under the field's path.
@pytest.mark.parametrize("path, wrap, good", [
    (("pretrain", "batch_size"), lambda v: v, 128),
    (("pretrain", "dr", "pairs"), lambda v: {"sample": v}, 8),
    (("finetune", "dr", "layers"), lambda v: [0, v], 1),
])
@pytest.mark.parametrize("value", ["8", 8.0, True])
def test_a_union_with_an_integer_is_as_strict(path: tuple[str, ...], wrap: Any, good: Any,
                                              value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec_with(path, wrap(value)))
    errors = info.value.errors()
    assert all(e["loc"][:len(path)] == path for e in errors)
    assert any(e["type"] == "int_type" for e in errors)
    JobSpec.model_validate(spec_with(path, wrap(good)))


def test_a_float_field_takes_an_integer() -> None:
    spec = spec_with(("pretrain", "learning_rate"), 1)
    spec["finetune"]["momentum"] = 0
    spec["validation_fraction"] = 0
    spec["pretrain"]["dr"]["weight"] = 2
    parsed = JobSpec.model_validate_json(json.dumps(spec))
    assert parsed.pretrain.learning_rate == 1.0 and isinstance(parsed.pretrain.learning_rate, float)
    assert parsed.finetune.momentum == 0.0 and parsed.validation_fraction == 0.0
    assert parsed.pretrain.dr.weight == 2.0


def test_every_choice_is_accepted_as_a_json_string() -> None:
    spec = spec_with(("pretrain", "dr", "divergence"), "jeffreys")
    spec["finetune"].update(optimizer="adam", activation="relu", init="normal",
                            dr={"distance": "cosine", "layers": [1], "pairs": {"sample": 4},
                                "normalize": "sum"})
    spec.update(precision="tf32", device="cuda:1")
    spec["model"]["visible_units"] = "gaussian"
    parsed = JobSpec.model_validate_json(json.dumps(spec))
    assert parsed.finetune.dr.pairs.sample == 4 and parsed.precision == "tf32"


def test_a_stored_spec_parses_again_from_its_json() -> None:
    spec = spec_with(("pretrain", "persistent"), True)
    spec["pretrain"].update(side_rows_per_batch=4, batch_size=32)
    spec["finetune"]["dr"] = {"layers": [0, 1], "pairs": {"sample": 8}}
    stored = json.loads(json.dumps(spec_to_dict(JobSpec.model_validate(spec))))
    assert JobSpec.model_validate(stored) == JobSpec.model_validate(spec)


def test_the_sweep_request_base_is_as_strict() -> None:
    base = spec_with(("seed",), "7")
    with pytest.raises(ValidationError) as info:
        SweepRequest.model_validate({"base": base, "grid": {"seed": [0, 1]}})
    assert [e["loc"] for e in info.value.errors()] == [("base", "seed")]
    ok = SweepRequest.model_validate({"base": JOB_SPEC_EXAMPLE, "grid": {"seed": [0, 1]}})
    assert ok.base.seed == 0
