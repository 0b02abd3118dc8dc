"""A stored JobSpec (plain dict, see api/schemas/jobs.py) -> dr_core configs.

The API has already checked the spec's shape and bounds; dr_core checks its own ranges
again, and any ValueError here is reported as a spec error (job failed with the reason).
"""
from __future__ import annotations

from typing import Any

from dr_core.config import (
    FeatureDRConfig,
    FinetuneConfig,
    PipelineConfig,
    PosteriorDRConfig,
    RBMConfig,
)

_RBM_FIELDS = ("epochs", "batch_size", "learning_rate", "cd_k", "persistent", "momentum",
               "final_momentum", "momentum_switch_epoch", "weight_decay", "init_std")
_FINETUNE_FIELDS = ("epochs", "batch_size", "optimizer", "learning_rate", "momentum",
                    "weight_decay", "activation")


class SpecError(ValueError):
    """The spec cannot run on this data (reported to the user as the failure reason)."""


def _pairs(value: Any) -> str | int:
    if value is None or value == "all":
        return "all"
    if isinstance(value, dict) and "sample" in value:
        return int(value["sample"])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise SpecError(f"dr.pairs: must be 'all' or {{'sample': K}}, got {value!r}")


def _posterior_dr(dr: dict | None) -> PosteriorDRConfig | None:
    if not dr or float(dr.get("weight", 0.0)) == 0.0:
        return None
    return PosteriorDRConfig(weight=float(dr["weight"]),
                             divergence=dr.get("divergence", "hellinger"),
                             pairs=_pairs(dr.get("pairs", "all")),
                             normalize=dr.get("normalize", "sum"))


def _feature_dr(dr: dict | None) -> FeatureDRConfig | None:
    if not dr or float(dr.get("weight", 0.0)) == 0.0:
        return None
    layers = dr.get("layers", "all")
    return FeatureDRConfig(weight=float(dr["weight"]), distance=dr.get("distance", "euclidean"),
                           layers=layers if layers == "all" else tuple(int(i) for i in layers),
                           pairs=_pairs(dr.get("pairs", "all")),
                           normalize=dr.get("normalize", "per_unit"))


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


def build_pipeline_config(spec: dict[str, Any], visible: str) -> PipelineConfig:
    """dr_core PipelineConfig for ``spec``; ``visible`` is already resolved (never "auto")."""
    try:
        hidden = tuple(int(h) for h in spec["model"]["hidden_layers"])
        pre = spec.get("pretrain")
        pretrain = None
        if pre is not None:
            kw = {k: pre[k] for k in _RBM_FIELDS if k in pre}
            dr = _posterior_dr(pre.get("dr"))
            pretrain = tuple(
                RBMConfig(n_hidden=h, visible=visible if i == 0 else "bernoulli", dr=dr, **kw)
                for i, h in enumerate(hidden))
        ft = spec.get("finetune")
        finetune = None
        if ft is not None:
            kw = {k: ft[k] for k in _FINETUNE_FIELDS if k in ft}
            finetune = FinetuneConfig(dr=_feature_dr(ft.get("dr")), **kw)
        cfg = PipelineConfig(hidden_layers=hidden, pretrain=pretrain, finetune=finetune)
        if finetune is not None and finetune.dr is not None:
            finetune.dr.layer_indices(len(hidden))
        return cfg
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"invalid spec: {exc}") from exc
