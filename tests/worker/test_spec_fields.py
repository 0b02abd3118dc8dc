"""Every JobSpec field reaches what it is meant to change, and nothing else reaches dr_core.

The walk enumerates the JobSpec's leaf fields from the pydantic model itself, so a field
added to the API without a path into the worker fails here until it is wired and listed.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from dr_core.config import FinetuneConfig, PipelineConfig, RBMConfig
from drtrain.jobs.spec import JobSpec, SampledPairs, resolve_batch_size, spec_to_dict
from drtrain.kit.models import Job
from drtrain.kit.settings import Settings
from worker.data import prepare_data
from worker.spec import SpecError, build_pipeline_config, parse_spec

BASE: dict[str, Any] = {
    "dataset_id": "builtin:digits",
    "model": {"hidden_layers": [6, 5]},
    "pretrain": {"dr": {"weight": 0.5}},
    "finetune": {"dr": {"weight": 0.1}},
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)
            and a is not SampledPairs]


def leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        nested = _models(field.annotation)
        if nested:
            for sub in nested:
                out |= leaf_paths(sub, (*prefix, name))
        else:
            out.add(".".join((*prefix, name)))
    return out


def with_value(path: str, value: Any) -> JobSpec:
    spec = spec_to_dict(JobSpec.model_validate(BASE))
    node = spec
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return JobSpec.model_validate(spec)


N_TRAIN = 1000


def pipeline(spec: JobSpec) -> PipelineConfig:
    return build_pipeline_config(spec, "bernoulli", N_TRAIN)


def first_rbm_field(attr: str) -> Callable[[JobSpec], Any]:
    return lambda s: getattr(pipeline(s).pretrain[0], attr)  # type: ignore[index]


def finetune_field(attr: str) -> Callable[[JobSpec], Any]:
    return lambda s: getattr(pipeline(s).finetune, attr)


def posterior_dr_field(attr: str) -> Callable[[JobSpec], Any]:
    return lambda s: getattr(pipeline(s).pretrain[0].dr, attr)  # type: ignore[index]


def feature_dr_field(attr: str) -> Callable[[JobSpec], Any]:
    return lambda s: getattr(pipeline(s).finetune.dr, attr)  # type: ignore[union-attr]


# path -> (another valid value, what it must change in the dr_core config)
TO_DR_CORE: dict[str, tuple[Any, Callable[[JobSpec], Any]]] = {
    "model.hidden_layers": ([7, 5], lambda s: pipeline(s).hidden_layers),
    "pretrain.epochs": (9, first_rbm_field("epochs")),
    "pretrain.batch_size": (17, first_rbm_field("batch_size")),
    "pretrain.learning_rate": (0.01, first_rbm_field("learning_rate")),
    "pretrain.cd_k": (3, first_rbm_field("cd_k")),
    "pretrain.persistent": (True, first_rbm_field("persistent")),
    "pretrain.momentum": (0.7, first_rbm_field("momentum")),
    "pretrain.final_momentum": (0.8, first_rbm_field("final_momentum")),
    "pretrain.weight_decay": (0.001, first_rbm_field("weight_decay")),
    "pretrain.side_rows_per_batch": (5, first_rbm_field("side_rows_per_batch")),
    "pretrain.dr.weight": (2.0, posterior_dr_field("weight")),
    "pretrain.dr.divergence": ("jeffreys", posterior_dr_field("divergence")),
    "pretrain.dr.pairs": ({"sample": 4}, posterior_dr_field("pairs")),
    "pretrain.dr.normalize": ("per_unit", posterior_dr_field("normalize")),
    "finetune.epochs": (3, finetune_field("epochs")),
    "finetune.batch_size": (19, finetune_field("batch_size")),
    "finetune.optimizer": ("adam", finetune_field("optimizer")),
    "finetune.learning_rate": (0.02, finetune_field("learning_rate")),
    "finetune.momentum": (0.5, finetune_field("momentum")),
    "finetune.weight_decay": (0.01, finetune_field("weight_decay")),
    "finetune.activation": ("relu", finetune_field("activation")),
    "finetune.init": ("normal", finetune_field("init")),
    "finetune.init_std": (0.1, finetune_field("init_std")),
    "precision": ("tf32", lambda s: pipeline(s).precision),
    "finetune.dr.weight": (0.3, feature_dr_field("weight")),
    "finetune.dr.distance": ("cosine", feature_dr_field("distance")),
    "finetune.dr.layers": ([1], feature_dr_field("layers")),
    "finetune.dr.pairs": ({"sample": 2}, feature_dr_field("pairs")),
    "finetune.dr.normalize": ("sum", feature_dr_field("normalize")),
}


def _prepared(spec: JobSpec, tmp_path: Path) -> Any:
    job = Job(tenant_id="t", dataset_id=spec.dataset_id, test_dataset_id=spec.test_dataset_id,
              spec=spec_to_dict(spec))
    return prepare_data(None, None, job, Settings(data_dir=str(tmp_path)), tmp_path)  # type: ignore[arg-type]


# path -> (another valid value, what it must change in the data the worker prepares)
TO_DATA: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "validation_fraction": (0.3, lambda p: len(p.split.y_val)),
    "seed": (11, lambda p: p.split.y_val.tolist()),
    "model.visible_units": ("gaussian", lambda p: p.visible),
    "test_dataset_id": ("builtin:digits", lambda p: p.split.X_test is None),
}

# Read by the service around training, each proven by the tests named here.
SERVICE_FIELDS = {
    "name": "drtrain.jobs.service.new_job -> jobs.name (tests/api/test_job_labels.py)",
    "tags": "drtrain.jobs.service.new_job -> jobs.tags, job_tags (tests/api/test_job_labels.py)",
    "dataset_id": "drtrain.jobs.service.new_job -> jobs.dataset_id -> worker.data._load "
                  "(every test that trains)",
    "device": "worker.runner._resolve_device (test_runner: an unavailable CUDA device fails)",
    "max_runtime_seconds": "worker.runner.run_job deadline (faults: max runtime)",
    "max_attempts": "jobs.max_attempts (test_reaper_heartbeat, worker fault tests)",
}

# dr_core fields the API cannot send: they must keep dr_core's own defaults.
DR_CORE_ONLY = {RBMConfig: {"n_hidden", "visible", "momentum_switch_epoch", "init_std"},
                FinetuneConfig: set()}


def test_every_jobspec_field_has_a_destination() -> None:
    assert leaf_paths(JobSpec) == set(TO_DR_CORE) | set(TO_DATA) | set(SERVICE_FIELDS)


@pytest.mark.parametrize("path", sorted(TO_DR_CORE))
def test_field_changes_its_dr_core_config(path: str) -> None:
    value, observe = TO_DR_CORE[path]
    base = JobSpec.model_validate(BASE)
    changed = with_value(path, value)
    assert observe(changed) != observe(base), f"{path} did not reach dr_core"


@pytest.mark.parametrize("path", sorted(TO_DATA))
def test_field_changes_the_prepared_data(path: str, tmp_path: Path) -> None:
    value, observe = TO_DATA[path]
    base = _prepared(JobSpec.model_validate(BASE), tmp_path)
    changed = _prepared(with_value(path, value), tmp_path)
    assert observe(changed) != observe(base), f"{path} did not reach the prepared data"


def test_only_spec_fields_reach_dr_core() -> None:
    """Fields dr_core has but the JobSpec does not are left at dr_core's defaults."""
    cfg = pipeline(JobSpec.model_validate(BASE))
    for config_type, instance in ((RBMConfig, cfg.pretrain[0]), (FinetuneConfig, cfg.finetune)):  # type: ignore[index]
        defaults = {f.name: f.default for f in dataclasses.fields(config_type)
                    if f.name in DR_CORE_ONLY[config_type] and f.default is not dataclasses.MISSING}
        for name, default in defaults.items():
            assert getattr(instance, name) == default, f"{config_type.__name__}.{name}"


def test_dr_weight_zero_or_null_turns_dr_off() -> None:
    for value in (None, {"weight": 0.0}):
        spec = with_value("pretrain.dr", value)
        assert pipeline(spec).pretrain[0].dr is None  # type: ignore[index]
        spec = with_value("finetune.dr", value)
        assert pipeline(spec).finetune.dr is None  # type: ignore[union-attr]


def test_upper_layers_see_bernoulli_units() -> None:
    cfg = build_pipeline_config(JobSpec.model_validate(BASE), "gaussian", N_TRAIN)
    assert [c.visible for c in cfg.pretrain] == ["gaussian", "bernoulli"]  # type: ignore[union-attr]


def test_defaults_agree_between_api_and_worker() -> None:
    """The stored spec is the API's fully defaulted dump; the worker reads it back as is."""
    stored = spec_to_dict(JobSpec.model_validate({"dataset_id": "builtin:digits"}))
    assert parse_spec(stored).model_dump(mode="json") == stored
    assert parse_spec(stored).validation_fraction == 0.1


def test_a_stored_spec_parses_under_the_strict_types() -> None:
    """Integers stay integers and floats floats in the stored JSON (a float given as 1 is
    stored as 1.0), so the strict model reads back every section it accepted."""
    submitted = {**BASE, "seed": 7, "max_attempts": 2, "finetune": {"dr": {"layers": [0, 1]}},
                 "pretrain": {"persistent": True, "batch_size": 32, "side_rows_per_batch": 4,
                              "learning_rate": 1, "dr": {"pairs": {"sample": 8}}}}
    stored = json.loads(json.dumps(spec_to_dict(JobSpec.model_validate(submitted))))
    assert isinstance(stored["pretrain"]["learning_rate"], float)
    assert parse_spec(stored) == JobSpec.model_validate(submitted)


def test_a_stored_spec_that_no_longer_validates_is_a_spec_error() -> None:
    stored = spec_to_dict(JobSpec.model_validate(BASE))
    stored["pretrain"]["cd_k"] = 0
    with pytest.raises(SpecError, match="stored spec"):
        parse_spec(stored)


def test_old_stored_specs_still_load() -> None:
    """A spec stored by 0.1.0 (every field present, no name/tags) still parses."""
    stored = {
        "dataset_id": "builtin:digits", "test_dataset_id": None, "validation_fraction": 0.1,
        "model": {"hidden_layers": [500, 500], "visible_units": "auto"},
        "pretrain": {"epochs": 5, "batch_size": 128, "learning_rate": 0.05, "cd_k": 1,
                     "persistent": False, "momentum": 0.5, "final_momentum": 0.9,
                     "weight_decay": 0.0002,
                     "dr": {"weight": 1.0, "divergence": "hellinger", "pairs": "all",
                            "normalize": "sum"}},
        "finetune": {"epochs": 20, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.1,
                     "momentum": 0.9, "weight_decay": 0.0, "activation": "sigmoid",
                     "dr": {"weight": 0.1, "distance": "euclidean", "layers": "all",
                            "pairs": "all", "normalize": "per_unit"}},
        "seed": 0, "device": "auto", "max_runtime_seconds": 86400, "max_attempts": 3,
    }
    assert np.isclose(parse_spec(stored).pretrain.dr.weight, 1.0)  # type: ignore[union-attr]


def test_auto_batch_size_scales_with_the_training_rows() -> None:
    assert [resolve_batch_size("auto", n) for n in (2, 40, 1617, 3300, 54000)] == \
        [2, 16, 16, 32, 128]
    assert resolve_batch_size(64, 10) == 64
    auto = JobSpec.model_validate(BASE)
    assert build_pipeline_config(auto, "bernoulli", 1617).finetune.batch_size == 16  # type: ignore[union-attr]
    assert build_pipeline_config(auto, "bernoulli", 54000).pretrain[0].batch_size == 128  # type: ignore[index]


def test_feature_dr_is_off_and_generative_dr_on_by_default() -> None:
    cfg = pipeline(JobSpec.model_validate({"dataset_id": "builtin:digits"}))
    assert cfg.finetune.dr is None  # type: ignore[union-attr]
    assert cfg.pretrain[0].dr is not None and cfg.pretrain[0].dr.divergence == "hellinger"  # type: ignore[index]
