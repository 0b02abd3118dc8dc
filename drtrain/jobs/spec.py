"""JobSpec: the body of ``POST /v1/jobs``, the one source of every default and bound.

Field names follow dr_core/config.py (RBMConfig, FinetuneConfig, PosteriorDRConfig,
FeatureDRConfig) so the worker can map a stored spec onto configs one to one.
Bounds here are the service's limits, tighter than dr_core's own checks.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drtrain.kit.ids import ID_PATTERN

MAX_PARAMETERS = 50_000_000
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without numpy here

Strict = ConfigDict(extra="forbid")


class SampledPairs(BaseModel):
    """K random cross-group partners per example instead of every pair."""

    model_config = Strict
    sample: int = Field(ge=1, le=1024)


Pairs = Literal["all"] | SampledPairs


class PretrainDR(BaseModel):
    model_config = Strict
    weight: float = Field(1.0, ge=0.0, le=1e4)
    divergence: Literal["hellinger", "jeffreys", "bhattacharyya", "jensen_shannon"] = "hellinger"
    pairs: Pairs = "all"
    normalize: Literal["sum", "per_unit"] = "sum"


class FinetuneDR(BaseModel):
    model_config = Strict
    weight: float = Field(0.1, ge=0.0, le=1e4)
    distance: Literal["euclidean", "cosine"] = "euclidean"
    layers: Literal["all"] | Annotated[list[Annotated[int, Field(ge=0, le=7)]],
                                       Field(min_length=1, max_length=8)] = "all"
    pairs: Pairs = "all"
    normalize: Literal["sum", "per_unit"] = "per_unit"


class ModelSpec(BaseModel):
    model_config = Strict
    hidden_layers: Annotated[list[Annotated[int, Field(ge=1, le=8192)]],
                             Field(min_length=1, max_length=8)] = [500, 500]
    visible_units: Literal["auto", "bernoulli", "gaussian"] = "auto"


class PretrainSpec(BaseModel):
    model_config = Strict
    epochs: int = Field(5, ge=0, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    learning_rate: float = Field(0.05, gt=0.0, le=10.0)
    cd_k: int = Field(1, ge=1, le=50)
    persistent: bool = False
    momentum: float = Field(0.5, ge=0.0, le=0.999)
    final_momentum: float = Field(0.9, ge=0.0, le=0.999)
    weight_decay: float = Field(0.0002, ge=0.0, le=1.0)
    dr: PretrainDR | None = Field(default_factory=PretrainDR)


class FinetuneSpec(BaseModel):
    model_config = Strict
    epochs: int = Field(20, ge=0, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, le=0.999)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    activation: Literal["sigmoid", "tanh", "relu"] = "sigmoid"
    dr: FinetuneDR | None = Field(default_factory=FinetuneDR)


JOB_SPEC_EXAMPLE: dict[str, Any] = {
    "dataset_id": "builtin:digits",
    "test_dataset_id": None,
    "validation_fraction": 0.1,
    "model": {"hidden_layers": [500, 500], "visible_units": "auto"},
    "pretrain": {"epochs": 5, "batch_size": 128, "learning_rate": 0.05, "cd_k": 1,
                 "persistent": False, "momentum": 0.5, "final_momentum": 0.9,
                 "weight_decay": 0.0002,
                 "dr": {"weight": 1.0, "divergence": "hellinger", "pairs": "all"}},
    "finetune": {"epochs": 20, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.1,
                 "momentum": 0.9, "weight_decay": 0.0, "activation": "sigmoid",
                 "dr": {"weight": 0.1, "distance": "euclidean", "layers": "all"}},
    "seed": 0, "device": "auto", "max_runtime_seconds": 86400, "max_attempts": 3,
}


class JobSpec(BaseModel):
    """What to train. Checked in two steps: here (shape and bounds) and at submit against the
    dataset (existence, visible units, parameter count), both answering 422."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [JOB_SPEC_EXAMPLE]})

    dataset_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    test_dataset_id: str | None = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN)
    validation_fraction: float = Field(0.1, ge=0.0, le=0.5)
    model: ModelSpec = Field(default_factory=ModelSpec)
    pretrain: PretrainSpec | None = Field(default_factory=PretrainSpec)
    finetune: FinetuneSpec | None = Field(default_factory=FinetuneSpec)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:[0-9]{1,2})$")
    max_runtime_seconds: int = Field(86400, ge=1, le=604800)
    # None: the server's DRTRAIN_MAX_ATTEMPTS, filled in at submit (the stored spec has the number).
    max_attempts: int | None = Field(None, ge=1, le=10)

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.pretrain is None and self.finetune is None:
            raise ValueError("pretrain and finetune cannot both be null")
        dr = self.finetune.dr if self.finetune else None
        if dr is not None and dr.layers != "all":
            n = len(self.model.hidden_layers)
            bad = [i for i in dr.layers if i >= n]
            if bad:
                raise ValueError(f"finetune.dr.layers: indices {bad} out of range for {n} hidden layers")
        return self

    def parameter_count(self, n_features: int, n_classes: int) -> int:
        """Weights and biases of the hidden stack plus the softmax head (when finetuning)."""
        dims = [n_features, *self.model.hidden_layers]
        if self.finetune is not None:
            dims.append(max(n_classes, 1))
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The fully defaulted spec as plain JSON, as stored in ``jobs.spec``."""
    return spec.model_dump(mode="json")
