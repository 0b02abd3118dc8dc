"""Sweeps without a request (``drtrain.sweeps.service``): a grid point may switch on a section
the base leaves null, its values are typed as strictly as the spec's, and a child's final
metrics come from the worker's metrics section."""
from __future__ import annotations

import re

import pytest

from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.errors import Invalid
from drtrain.sweeps.grid import expand_grid
from drtrain.sweeps.service import final_metrics
from tests.factories import small_spec


def test_grid_can_switch_on_a_null_section() -> None:
    base = spec_to_dict(JobSpec.model_validate({**small_spec("x"), "pretrain": {"dr": None}}))
    [(point, spec)] = expand_grid(base, {"pretrain.dr.weight": [0.3]})
    assert point == {"pretrain.dr.weight": 0.3}
    assert spec.pretrain.dr.weight == 0.3 and spec.pretrain.dr.divergence == "hellinger"


def test_final_metrics_prefers_the_workers_metrics_section() -> None:
    result = {"test_accuracy": 0.9, "metrics": {"test_accuracy": 0.9, "test_loss": None},
              "wall_seconds": 12.5, "model_size_bytes": 1000, "classes": ["0", "1"]}
    assert final_metrics(result) == {"test_accuracy": 0.9, "wall_seconds": 12.5}
    assert final_metrics(None) == {}


@pytest.mark.parametrize("path, value", [
    ("seed", "1"), ("seed", 1.0), ("seed", True), ("pretrain.epochs", 1.0),
    ("pretrain.persistent", 0), ("pretrain.persistent", "true"), ("model.hidden_layers", [8.0]),
])
def test_grid_values_are_as_strict_as_the_spec(path: str, value: object) -> None:
    base = spec_to_dict(JobSpec.model_validate(small_spec("x")))
    with pytest.raises(Invalid) as info:
        expand_grid(base, {path: [value]})
    assert info.value.errors[0]["loc"] == ["body", "grid", path]


def test_grid_values_of_the_right_type_expand() -> None:
    base = spec_to_dict(JobSpec.model_validate(small_spec("x")))
    points = expand_grid(base, {"seed": [0, 1], "pretrain.learning_rate": [1, 0.5],
                                "pretrain.persistent": [True], "model.hidden_layers": [[8]]})
    assert [(p["seed"], s.pretrain.learning_rate) for p, s in points] == [
        (0, 1.0), (0, 0.5), (1, 1.0), (1, 0.5)]
    assert all(s.pretrain.persistent and s.model.hidden_layers == [8] for _, s in points)


@pytest.mark.parametrize("values, repeated", [([1, 1], "1"), ([0.5, 1, 1.0], "1.0"),
                                              ([[8], [8]], "[8]")])
def test_a_value_twice_on_one_path_is_refused(values: list[object], repeated: str) -> None:
    # two alike points would pool as replicates of one, under the same seed
    base = spec_to_dict(JobSpec.model_validate(small_spec("x")))
    path = "model.hidden_layers" if isinstance(values[0], list) else "pretrain.dr.weight"
    with pytest.raises(Invalid, match=rf"value {re.escape(repeated)} appears twice") as info:
        expand_grid(base, {path: values})
    assert info.value.errors[0]["loc"] == ["body", "grid", path]


@pytest.mark.parametrize("path, said", [
    ("pretrain.dr.wieght", "pretrain.dr has no field 'wieght' (did you mean 'pretrain.dr.weight'?)"),
    ("pretrian.epochs", "the JobSpec has no field 'pretrian' (did you mean 'pretrain'?)"),
    ("finetune.dr.distanse", "finetune.dr has no field 'distanse' (did you mean "
                             "'finetune.dr.distance'?)"),
    ("nothing_like_it", "the JobSpec has no field 'nothing_like_it'"),
])
def test_a_path_that_names_no_field_says_so_and_what_is_close(path: str, said: str) -> None:
    base = spec_to_dict(JobSpec.model_validate(small_spec("x")))
    with pytest.raises(Invalid) as info:
        expand_grid(base, {path: [0, 1]})
    assert info.value.detail == f"grid {path!r}: {said}"
    assert info.value.errors[0]["loc"] == ["body", "grid", path]
