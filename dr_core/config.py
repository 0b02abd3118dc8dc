"""Frozen, range-checked configuration dataclasses for every dr_core trainer.

A config that constructs is a config that can run: every field is checked in
``__post_init__`` and a bad value raises ``ValueError`` naming the field.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

DIVERGENCES = ("hellinger", "jeffreys", "bhattacharyya", "jensen_shannon")
DISTANCES = ("euclidean", "cosine")
NORMALIZE = ("sum", "per_unit")
VISIBLE_UNITS = ("bernoulli", "gaussian")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
OPTIMIZERS = ("sgd", "adam")
INITS = ("glorot", "normal")
PRECISIONS = ("fp32", "tf32")

# DR pairs: "all" cross-group pairs (exact), or K sampled partners per example.
Pairs = Literal["all"] | int
# Bounds the sampled pass (B * K * H work per step); once K >= B, "all" is exact and no dearer.
MAX_SAMPLED_PAIRS = 4096


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


def _check_range(value: float, name: str, lo: float, hi: float) -> None:
    _check(isinstance(value, (int, float)) and lo <= value <= hi, name,
           f"must be in [{lo}, {hi}], got {value!r}")


def check_pairs(pairs: Pairs, name: str = "pairs") -> None:
    """The one check of a ``Pairs`` value (configs and penalties alike): ValueError unless it
    is "all" or an int K in [1, MAX_SAMPLED_PAIRS] (a bool is not a K)."""
    if isinstance(pairs, str):
        ok = pairs == "all"
    else:
        ok = isinstance(pairs, int) and not isinstance(pairs, bool) and 1 <= pairs <= MAX_SAMPLED_PAIRS
    _check(ok, name, f"must be 'all' or an int K in [1, {MAX_SAMPLED_PAIRS}], got {pairs!r}")


@dataclass(frozen=True)
class PosteriorDRConfig:
    """Generative DR for one RBM layer: lambda * mean over cross-group pairs of a divergence."""

    weight: float = 0.0
    divergence: str = "hellinger"
    pairs: Pairs = "all"
    normalize: str = "sum"

    def __post_init__(self) -> None:
        _check_range(self.weight, "dr.weight", 0.0, 1e4)
        _check(self.divergence in DIVERGENCES, "dr.divergence", f"must be one of {DIVERGENCES}")
        check_pairs(self.pairs, "dr.pairs")
        _check(self.normalize in NORMALIZE, "dr.normalize", f"must be one of {NORMALIZE}")

    @property
    def active(self) -> bool:
        return self.weight > 0.0


@dataclass(frozen=True)
class FeatureDRConfig:
    """Discriminative DR: lambda * sum over chosen hidden layers of a feature distance.

    ``layers`` is "all" (every hidden layer) or 0-based hidden-layer indices.
    """

    weight: float = 0.0
    distance: str = "euclidean"
    layers: Literal["all"] | tuple[int, ...] = "all"
    pairs: Pairs = "all"
    normalize: str = "per_unit"

    def __post_init__(self) -> None:
        _check_range(self.weight, "dr.weight", 0.0, 1e4)
        _check(self.distance in DISTANCES, "dr.distance", f"must be one of {DISTANCES}")
        if not isinstance(self.layers, str):
            object.__setattr__(self, "layers", tuple(self.layers))
            _check(all(isinstance(i, int) and i >= 0 for i in self.layers), "dr.layers",
                   "must be 'all' or a list of hidden-layer indices >= 0")
        else:
            _check(self.layers == "all", "dr.layers", "must be 'all' or a list of indices")
        check_pairs(self.pairs, "dr.pairs")
        _check(self.normalize in NORMALIZE, "dr.normalize", f"must be one of {NORMALIZE}")

    @property
    def active(self) -> bool:
        return self.weight > 0.0

    def layer_indices(self, n_hidden_layers: int) -> tuple[int, ...]:
        if self.layers == "all":
            return tuple(range(n_hidden_layers))
        bad = [i for i in self.layers if i >= n_hidden_layers]
        _check(not bad, "dr.layers", f"indices {bad} out of range for {n_hidden_layers} hidden layers")
        return tuple(self.layers)


@dataclass(frozen=True)
class RBMConfig:
    """One RBM layer trained with CD-k or PCD.

    Momentum is ``momentum`` for the first ``momentum_switch_epoch`` epochs, then
    ``final_momentum`` (Hinton's practical guide schedule). ``side_rows_per_batch`` > 0 puts
    that many rows with a side value in every mini-batch (``dr_core.batches``); 0 shuffles.
    """

    n_hidden: int
    visible: str = "bernoulli"
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 0.05
    cd_k: int = 1
    persistent: bool = False
    momentum: float = 0.5
    final_momentum: float = 0.9
    momentum_switch_epoch: int = 5
    weight_decay: float = 2e-4
    init_std: float = 0.01
    side_rows_per_batch: int = 0
    dr: PosteriorDRConfig | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.n_hidden, int) and 1 <= self.n_hidden <= 16384, "n_hidden",
               f"must be an int in [1, 16384], got {self.n_hidden!r}")
        _check(self.visible in VISIBLE_UNITS, "visible", f"must be one of {VISIBLE_UNITS}")
        _check(isinstance(self.epochs, int) and 0 <= self.epochs <= 10000, "epochs", "must be in [0, 10000]")
        _check(isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65536, "batch_size",
               "must be in [1, 65536]")
        _check_range(self.learning_rate, "learning_rate", 1e-8, 10.0)
        _check(isinstance(self.cd_k, int) and 1 <= self.cd_k <= 100, "cd_k", "must be in [1, 100]")
        _check_range(self.momentum, "momentum", 0.0, 0.999)
        _check_range(self.final_momentum, "final_momentum", 0.0, 0.999)
        _check(isinstance(self.momentum_switch_epoch, int) and self.momentum_switch_epoch >= 0,
               "momentum_switch_epoch", "must be >= 0")
        _check_range(self.weight_decay, "weight_decay", 0.0, 1.0)
        _check_range(self.init_std, "init_std", 0.0, 10.0)
        _check(isinstance(self.side_rows_per_batch, int) and not isinstance(self.side_rows_per_batch, bool)
               and 0 <= self.side_rows_per_batch < self.batch_size, "side_rows_per_batch",
               f"must be an int in [0, {self.batch_size - 1}] (below batch_size), "
               f"got {self.side_rows_per_batch!r}")

    def momentum_at(self, epoch: int) -> float:
        return self.momentum if epoch < self.momentum_switch_epoch else self.final_momentum


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised training of the MLP (softmax head on the hidden stack).

    ``init`` draws every randomly initialised weight matrix (the hidden layers without
    pretraining, and the head): "glorot" uniform with a gain by activation (4 for sigmoid),
    or "normal" N(0, init_std^2), the classic small initialisation (0.01) under which deep
    sigmoid nets stop learning (the vanishing-gradient setting DR targets). Biases start at 0.
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    activation: str = "sigmoid"
    init: str = "glorot"
    init_std: float = 0.01
    dr: FeatureDRConfig | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.epochs, int) and 0 <= self.epochs <= 10000, "epochs", "must be in [0, 10000]")
        _check(isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65536, "batch_size",
               "must be in [1, 65536]")
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        _check_range(self.learning_rate, "learning_rate", 1e-8, 10.0)
        _check_range(self.momentum, "momentum", 0.0, 0.999)
        _check_range(self.weight_decay, "weight_decay", 0.0, 1.0)
        _check(self.activation in ACTIVATIONS, "activation", f"must be one of {ACTIVATIONS}")
        _check(self.init in INITS, "init", f"must be one of {INITS}")
        _check_range(self.init_std, "init_std", 1e-8, 10.0)


@dataclass(frozen=True)
class PipelineConfig:
    """A whole job: optional greedy DBN pretraining, then MLP training.

    ``pretrain`` holds one RBMConfig per hidden layer (same length as ``hidden_layers``)
    or is None (random initialisation). ``finetune`` None stops after pretraining.
    ``precision``: "fp32" or "tf32" CUDA matrix products (``dr_core.precision``; no effect on
    CPU).
    """

    hidden_layers: tuple[int, ...]
    pretrain: tuple[RBMConfig, ...] | None = None
    finetune: FinetuneConfig | None = field(default_factory=FinetuneConfig)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_layers", tuple(self.hidden_layers))
        _check(1 <= len(self.hidden_layers) <= 16, "hidden_layers", "must have 1 to 16 layers")
        _check(all(isinstance(h, int) and 1 <= h <= 16384 for h in self.hidden_layers),
               "hidden_layers", "each size must be an int in [1, 16384]")
        if self.pretrain is not None:
            object.__setattr__(self, "pretrain", tuple(self.pretrain))
            _check(len(self.pretrain) == len(self.hidden_layers), "pretrain",
                   "needs one RBMConfig per hidden layer")
            _check(all(c.n_hidden == h for c, h in zip(self.pretrain, self.hidden_layers)),
                   "pretrain", "RBMConfig.n_hidden must match hidden_layers")
            _check(all(c.visible == "bernoulli" for c in self.pretrain[1:]), "pretrain",
                   "only the first layer may have gaussian visible units")
        _check(self.pretrain is not None or self.finetune is not None, "pipeline",
               "needs pretrain, finetune or both")
        _check(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")


def sizes(n_visible: int, hidden: Sequence[int]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every hidden layer."""
    dims = [n_visible, *hidden]
    return list(zip(dims[:-1], dims[1:]))
