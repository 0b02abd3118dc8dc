"""A stored JobSpec -> the one parsed ``JobSpec`` -> dr_core configs, in one function each.

``drtrain.jobs.spec.JobSpec`` is the single source of every default and bound: the worker
parses the stored spec with it (so a default can never differ between the API and the
worker) and ``build_pipeline_config`` maps every training field it holds onto dr_core's
configs. Fields that dr_core has but the API cannot send keep dr_core's own defaults.
dr_core checks its own ranges again; any ValueError here is a spec error (the job fails
with the reason).
"""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dr_core.config import (
    FeatureDRConfig,
    FinetuneConfig,
    PipelineConfig,
    PosteriorDRConfig,
    RBMConfig,
)
from drtrain.jobs.spec import (
    FinetuneDR,
    FinetuneSpec,
    JobSpec,
    Pairs,
    PretrainDR,
    PretrainSpec,
    resolve_batch_size,
)


class SpecError(ValueError):
    """The spec cannot run on this data (reported to the user as the failure reason)."""


def parse_spec(stored: dict[str, Any]) -> JobSpec:
    """The stored spec (a fully defaulted JobSpec dump) as the model the API validated."""
    try:
        return JobSpec.model_validate(stored)
    except ValidationError as exc:
        raise SpecError(f"stored spec does not validate: {exc.errors()[0]['msg']}") from exc


def _pairs(pairs: Pairs) -> str | int:
    return "all" if pairs == "all" else pairs.sample  # type: ignore[union-attr]


def _posterior_dr(dr: PretrainDR | None) -> PosteriorDRConfig | None:
    if dr is None or dr.weight == 0.0:
        return None
    return PosteriorDRConfig(weight=dr.weight, divergence=dr.divergence, pairs=_pairs(dr.pairs),
                             normalize=dr.normalize)


def _feature_dr(dr: FinetuneDR | None) -> FeatureDRConfig | None:
    if dr is None or dr.weight == 0.0:
        return None
    layers = dr.layers if dr.layers == "all" else tuple(dr.layers)
    return FeatureDRConfig(weight=dr.weight, distance=dr.distance, layers=layers,
                           pairs=_pairs(dr.pairs), normalize=dr.normalize)


def _rbm_config(pre: PretrainSpec, n_hidden: int, visible: str, n_train: int) -> RBMConfig:
    return RBMConfig(n_hidden=n_hidden, visible=visible, epochs=pre.epochs,
                     batch_size=resolve_batch_size(pre.batch_size, n_train),
                     learning_rate=pre.learning_rate, cd_k=pre.cd_k,
                     persistent=pre.persistent, momentum=pre.momentum,
                     final_momentum=pre.final_momentum, weight_decay=pre.weight_decay,
                     side_rows_per_batch=pre.side_rows_per_batch or 0, dr=_posterior_dr(pre.dr))


def _finetune(ft: FinetuneSpec, n_train: int) -> FinetuneConfig:
    return FinetuneConfig(epochs=ft.epochs, batch_size=resolve_batch_size(ft.batch_size, n_train),
                          optimizer=ft.optimizer,
                          learning_rate=ft.learning_rate, momentum=ft.momentum,
                          weight_decay=ft.weight_decay, activation=ft.activation,
                          init=ft.init, init_std=ft.init_std, dr=_feature_dr(ft.dr))


def resolve_visible(requested: str, data_min: float, data_max: float) -> str:
    """"auto" -> bernoulli when every value lies in [0, 1], else gaussian."""
    in_unit = data_min >= 0.0 and data_max <= 1.0
    if requested == "auto":
        return "bernoulli" if in_unit else "gaussian"
    if requested == "bernoulli" and not in_unit:
        raise SpecError(f"model.visible_units: bernoulli needs data in [0, 1], got "
                        f"[{data_min:g}, {data_max:g}]")
    if requested not in ("bernoulli", "gaussian"):
        raise SpecError(f"model.visible_units: unknown value {requested!r}")
    return requested


def build_pipeline_config(spec: JobSpec, visible: str, n_train: int) -> PipelineConfig:
    """dr_core PipelineConfig for ``spec`` on ``n_train`` training rows; ``visible`` is
    already resolved (never "auto"), batch sizes are resolved here.

    Only the first RBM sees the data; the layers above it see Bernoulli hidden units."""
    hidden = tuple(spec.model.hidden_layers)
    try:
        pretrain = None
        if spec.pretrain is not None:
            pretrain = tuple(_rbm_config(spec.pretrain, h, visible if i == 0 else "bernoulli", n_train)
                             for i, h in enumerate(hidden))
        finetune = _finetune(spec.finetune, n_train) if spec.finetune is not None else None
        if finetune is not None and finetune.dr is not None:
            finetune.dr.layer_indices(len(hidden))
        return PipelineConfig(hidden_layers=hidden, pretrain=pretrain, finetune=finetune,
                              precision=spec.precision)
    except ValueError as exc:
        raise SpecError(f"invalid spec: {exc}") from exc
