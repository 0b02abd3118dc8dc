"""Sweeps without a request (``drtrain.sweeps.service``): a grid point may switch on a section
the base leaves null, and a child's final metrics come from the worker's metrics section."""
from __future__ import annotations

from drtrain.jobs.spec import JobSpec, spec_to_dict
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
