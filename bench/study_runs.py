"""One arm of the reproduction study, run through dr_core.pipeline.run_pipeline, and its measurements.

Every arm shares the architecture, the fine-tuning budget and the seed; arms differ only in the
initialisation (random Glorot vs DBN pretraining, with or without generative DR) and in whether
fine-tuning adds discriminative DR.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.study_data import StudyData
from dr_core.config import FeatureDRConfig, FinetuneConfig, PipelineConfig, PosteriorDRConfig, RBMConfig
from dr_core.events import Event
from dr_core.mlp import init_mlp
from dr_core.pipeline import run_pipeline
from dr_core.regularizers import posterior_divergence


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    pretrain: bool
    generative: tuple[str, Any] | None = None  # (divergence, pairs)
    discriminative: bool = False
    reuses: str | None = None  # arm whose pretrained stack this arm fine-tunes (same seed)

    @property
    def weight_name(self) -> str | None:
        """Key into the weights dict for this arm's generative DR."""
        return self.generative[0] if self.generative else None


ARMS = (
    Arm("a", "random init + backprop", pretrain=False),
    Arm("b", "DBN, no DR + fine-tune", pretrain=True),
    Arm("c", "DBN + gen. DR (hellinger, all pairs) + fine-tune", pretrain=True,
        generative=("hellinger", "all")),
    Arm("c16", "DBN + gen. DR (bhattacharyya, K=16) + fine-tune", pretrain=True,
        generative=("bhattacharyya", 16)),
    Arm("d", "(c) + disc. DR in fine-tuning", pretrain=True, generative=("hellinger", "all"),
        discriminative=True, reuses="c"),
    Arm("e", "random init + disc. DR", pretrain=False, discriminative=True),
)
ARM_BY_KEY = {a.key: a for a in ARMS}
DISC = "discriminative"  # key of the discriminative DR weight in a weights dict


@dataclass(frozen=True)
class Budget:
    """Same for every arm of a dataset. Pretraining: CD-1, one RBM per hidden layer."""

    hidden: tuple[int, ...] = (256, 256, 256)
    pretrain_epochs: int = 30
    pretrain_batch: int = 32
    pretrain_lr: float = 0.1
    finetune_epochs: int = 30
    finetune_batch: int = 32
    finetune_lr: float = 0.1
    finetune_momentum: float = 0.9


@dataclass
class Pretrained:
    """A finished DBN: the pipeline's resumable state after the last layer, and its measurements."""

    state: dict[str, Any]
    seconds: float
    layer_metrics: list[dict[str, float]]


@dataclass
class RunResult:
    dataset: str
    arm: str
    seed: int
    test_error: float
    val_errors: list[float]
    train_losses: list[float]
    grad_first: float  # mean |dL/dW| of the first hidden layer over the first fine-tuning epoch
    grad_last: float  # same, last hidden layer
    grad_head: float
    init_divergence: list[float]  # per hidden layer, before fine-tuning, validation set, per unit
    train_divergence: list[float] | None  # the pretraining metric (train subsample), per unit
    recon_errors: list[float] | None
    pretrain_seconds: float
    finetune_seconds: float
    pretrain_reused: bool = False

    @property
    def grad_ratio(self) -> float:
        return self.grad_first / self.grad_last if self.grad_last > 0 else float("nan")

    @property
    def wall_seconds(self) -> float:
        return self.pretrain_seconds + self.finetune_seconds


def pipeline_config(budget: Budget, arm: Arm, weights: dict[str, float]) -> PipelineConfig:
    pretrain = None
    if arm.pretrain:
        gen = None
        if arm.generative is not None:
            divergence, pairs = arm.generative
            gen = PosteriorDRConfig(weight=weights[divergence], divergence=divergence, pairs=pairs)
        pretrain = tuple(RBMConfig(n_hidden=h, epochs=budget.pretrain_epochs, batch_size=budget.pretrain_batch,
                                   learning_rate=budget.pretrain_lr, dr=gen) for h in budget.hidden)
    disc = FeatureDRConfig(weight=weights[DISC], distance="euclidean", layers="all", pairs="all",
                           normalize="per_unit") if arm.discriminative else None
    finetune = FinetuneConfig(epochs=budget.finetune_epochs, batch_size=budget.finetune_batch,
                              optimizer="sgd", learning_rate=budget.finetune_lr,
                              momentum=budget.finetune_momentum, activation="sigmoid", dr=disc)
    return PipelineConfig(hidden_layers=budget.hidden, pretrain=pretrain, finetune=finetune)


class _Timer:
    """Callback: notes when pretraining ended and keeps the state after the last layer."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.pretrain_end: float | None = None
        self.last_state: dict[str, Any] | None = None

    def on_epoch_end(self, event: Event) -> None:
        pass

    def on_layer_end(self, event: Event) -> None:
        if event.layer == self.n_layers - 1:
            self.pretrain_end = time.perf_counter()
            self.last_state = event.state

    def should_stop(self) -> bool:
        return False


@torch.no_grad()
def _divergence_per_layer(stack: list[tuple[torch.Tensor, torch.Tensor]], X: np.ndarray, y: np.ndarray
                          ) -> list[float]:
    """Mean squared-Hellinger divergence between p(h|x) of cross-class pairs, per hidden unit, layer by layer."""
    h = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    side = torch.from_numpy(np.asarray(y, dtype=np.int64))
    out = []
    for W, c in stack:
        h = torch.sigmoid(h @ W.float() + c.float())
        out.append(float(posterior_divergence(h, side, divergence="hellinger", pairs="all")) / h.shape[1])
    return out


def _initial_stack(data: StudyData, budget: Budget, seed: int, pretrained: Pretrained | None
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The hidden layers as fine-tuning starts: the RBMs, or the pipeline's own Glorot draw.

    run_pipeline's first use of an un-pretrained generator is init_mlp, so seeding a fresh
    generator identically reproduces the initial weights of arms (a) and (e).
    """
    if pretrained is not None:
        s = pretrained.state
        return [(s[f"rbm.{i}.W"], s[f"rbm.{i}.c"]) for i in range(len(budget.hidden))]
    model = init_mlp(data.split.X_train.shape[1], list(budget.hidden), data.n_classes, "sigmoid",
                     torch.Generator().manual_seed(seed))
    return [(layer.weight.detach().T, layer.bias.detach()) for layer in model.hidden]


def run_arm(data: StudyData, budget: Budget, arm: Arm, seed: int, weights: dict[str, float],
            reuse: Pretrained | None = None) -> tuple[RunResult, Pretrained | None]:
    """Run one arm on one seed. ``reuse`` (the pretrained stack of ``arm.reuses``, same seed)
    resumes the pipeline after pretraining: on CPU that is bit-identical to pretraining again."""
    cfg = pipeline_config(budget, arm, weights)
    timer = _Timer(len(budget.hidden))
    started = time.perf_counter()
    result = run_pipeline(cfg, data.split, n_classes=data.n_classes, visible="bernoulli",
                          generator=torch.Generator().manual_seed(seed), callback=timer,
                          resume=reuse.state if reuse is not None else None)
    ended = time.perf_counter()

    pretrained = reuse
    if arm.pretrain and reuse is None:
        assert timer.last_state is not None and timer.pretrain_end is not None
        per_layer: dict[int, dict[str, float]] = {}
        for event in result.history:
            if event.phase == "pretrain" and event.layer is not None:
                per_layer[event.layer] = dict(event.metrics)  # the last event of a layer wins
        pretrained = Pretrained(state=timer.last_state, seconds=timer.pretrain_end - started,
                                layer_metrics=[per_layer[i] for i in range(len(budget.hidden))])

    ft = [e.metrics for e in result.history if e.phase == "finetune"]
    n_hidden = len(budget.hidden)
    X_val, y_val = data.split.X_val, data.split.y_val
    run = RunResult(
        dataset=data.name, arm=arm.key, seed=seed,
        test_error=1.0 - result.metrics["test_accuracy"],
        val_errors=[1.0 - m["val_accuracy"] for m in ft],
        train_losses=[m["train_loss"] for m in ft],
        grad_first=ft[0]["grad_norm.layer0"], grad_last=ft[0][f"grad_norm.layer{n_hidden - 1}"],
        grad_head=ft[0]["grad_norm.head"],
        init_divergence=_divergence_per_layer(_initial_stack(data, budget, seed, pretrained), X_val, y_val),
        train_divergence=[m["cross_group_divergence"] / h for m, h in zip(pretrained.layer_metrics, budget.hidden)]
        if pretrained else None,
        recon_errors=[m["recon_error"] for m in pretrained.layer_metrics] if pretrained else None,
        pretrain_seconds=pretrained.seconds if pretrained else 0.0,
        finetune_seconds=(ended - timer.pretrain_end) if (timer.pretrain_end and reuse is None)
        else (ended - started),
        pretrain_reused=reuse is not None,
    )
    return run, pretrained if arm.pretrain else None


def selection_score(run: RunResult, last: int = 3) -> float:
    """Model-selection criterion of the weight sweep: mean validation error of the last epochs
    (less noisy than the final epoch alone; never the test set)."""
    tail = run.val_errors[-last:]
    return float(np.mean(tail))

