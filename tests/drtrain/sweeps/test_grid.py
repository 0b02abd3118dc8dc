"""Sweeps without a request (``drtrain.sweeps.service``): a grid point may switch on a section
the base leaves null, its values are typed as strictly as the spec's, and a child's final
metrics come from the worker's metrics section."""
from __future__ import annotations

import pytest

from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.errors import Invalid
from drtrain.sweeps.service import expand_grid, final_metrics
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
