"""The arms of the reproduction study, the JobSpec each arm submits, and what the study reads
back from a finished job (its metric points and result, over HTTP).

Every arm of a regime shares the architecture, the fine-tuning budget, the data and the seed;
arms differ only in the initialisation (random Glorot, classic small normal, or DBN
pretraining, with or without generative DR) and in whether fine-tuning adds feature DR, and in
which grouping DR uses (the class label, or a coarse grouping that is not the label).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np

# Keys of the DR weights, each swept on validation on its own arm (SWEPT_ON).
GEN, GEN_COARSE, DISC, DISC_COARSE, DISC_DEEP = "gen", "gen_coarse", "disc", "disc_coarse", "disc_deep"
WEIGHT_LABELS = {GEN: "generative DR, side = label", GEN_COARSE: "generative DR, side = coarse group",
                 DISC: "feature DR, side = label", DISC_COARSE: "feature DR, side = coarse group",
                 DISC_DEEP: "feature DR on the deep small-init net"}


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    pretrain: bool
    gen: str | None = None  # weight key of generative DR in pretraining
    disc: str | None = None  # weight key of feature DR in fine-tuning
    side: str = "label"  # the grouping DR pairs across: "label" or "coarse" (another dataset upload)
    init: str = "glorot"  # random initialisation of layers not pretrained
    deep: bool = False  # the deep architecture (Budget.deep_hidden) instead of Budget.hidden


ARMS = (
    Arm("a", "random init (Glorot) + backprop", pretrain=False),
    Arm("b", "DBN, no DR + fine-tune", pretrain=True),
    Arm("c", "DBN + gen. DR (hellinger, side = label) + fine-tune", pretrain=True, gen=GEN),
    Arm("d", "(c) + feature DR in fine-tuning", pretrain=True, gen=GEN, disc=DISC),
    Arm("e", "random init + feature DR (side = label)", pretrain=False, disc=DISC),
    Arm("cg", "DBN + gen. DR (hellinger, side = coarse group) + fine-tune", pretrain=True, gen=GEN_COARSE,
        side="coarse"),
    Arm("eg", "random init + feature DR (side = coarse group)", pretrain=False, disc=DISC_COARSE,
        side="coarse"),
    Arm("f0", "deep net, classic N(0, 0.01) init, no DR", pretrain=False, init="normal", deep=True),
    Arm("f1", "deep net, classic N(0, 0.01) init + feature DR", pretrain=False, disc=DISC_DEEP,
        init="normal", deep=True),
)
ARM_BY_KEY = {a.key: a for a in ARMS}
# The arm each weight is chosen on (validation error, sweep seed); (d) reuses (c)'s and (e)'s.
SWEPT_ON = {GEN: "c", GEN_COARSE: "cg", DISC: "e", DISC_COARSE: "eg", DISC_DEEP: "f1"}


@dataclass(frozen=True)
class Budget:
    """Same for every arm of a regime. Pretraining: CD-1, one RBM per hidden layer."""

    hidden: tuple[int, ...] = (256, 256, 256)
    deep_hidden: tuple[int, ...] = (256,) * 6
    pretrain_epochs: int = 30
    pretrain_batch: int = 32
    pretrain_lr: float = 0.1
    finetune_epochs: int = 30
    finetune_batch: int = 32
    finetune_lr: float = 0.1
    finetune_momentum: float = 0.9
    init_std: float = 0.01  # std of the classic "normal" initialisation (arms f)


@dataclass
class RunResult:
    dataset: str
    arm: str
    seed: int
    job_id: str
    test_error: float
    val_errors: list[float]
    train_losses: list[float]
    grad_layers: list[float]  # mean ‖dL/dW‖ per hidden layer over the first fine-tuning epoch
    grad_head: float
    train_divergence: list[float] | None  # per layer, the pretraining metric, per unit
    recon_errors: list[float] | None
    pretrain_seconds: float
    finetune_seconds: float

    @property
    def grad_first(self) -> float:
        return self.grad_layers[0]

    @property
    def grad_last(self) -> float:
        return self.grad_layers[-1]

    @property
    def grad_ratio(self) -> float:
        return self.grad_first / self.grad_last if self.grad_last > 0 else float("nan")

    @property
    def wall_seconds(self) -> float:
        return self.pretrain_seconds + self.finetune_seconds


def hidden_of(budget: Budget, arm: Arm) -> tuple[int, ...]:
    return budget.deep_hidden if arm.deep else budget.hidden


def job_spec(budget: Budget, arm: Arm, weights: dict[str, float], *, dataset_id: str, test_id: str,
             validation_fraction: float, seed: int, name: str, tags: list[str]) -> dict[str, Any]:
    """The POST /v1/jobs body of one arm on one seed."""
    pretrain = None
    if arm.pretrain:
        gen = ({"weight": weights[arm.gen], "divergence": "hellinger", "pairs": "all", "normalize": "sum"}
               if arm.gen else None)
        pretrain = {"epochs": budget.pretrain_epochs, "batch_size": budget.pretrain_batch,
                    "learning_rate": budget.pretrain_lr, "cd_k": 1, "dr": gen}
    disc = ({"weight": weights[arm.disc], "distance": "euclidean", "layers": "all", "pairs": "all",
             "normalize": "per_unit"} if arm.disc else None)
    finetune = {"epochs": budget.finetune_epochs, "batch_size": budget.finetune_batch, "optimizer": "sgd",
                "learning_rate": budget.finetune_lr, "momentum": budget.finetune_momentum,
                "activation": "sigmoid", "init": arm.init, "init_std": budget.init_std, "dr": disc}
    return {"name": name, "tags": tags, "dataset_id": dataset_id, "test_dataset_id": test_id,
            "validation_fraction": validation_fraction,
            "model": {"hidden_layers": list(hidden_of(budget, arm)), "visible_units": "bernoulli"},
            "pretrain": pretrain, "finetune": finetune, "seed": seed, "device": "auto"}


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)  # Python >= 3.11 reads the API's "...Z"


def _series(points: list[dict[str, Any]], phase: str, name: str, layer: int | None = None) -> list[float]:
    """Values of one metric in epoch order (the last point of an epoch wins: a retried attempt)."""
    by_epoch = {p["epoch"]: p["value"] for p in points
                if p["phase"] == phase and p["name"] == name and (layer is None or p["layer"] == layer)}
    return [float(by_epoch[e]) for e in sorted(by_epoch)]


def _first_epoch(points: list[dict[str, Any]], name: str) -> float:
    values = _series(points, "finetune", name)
    if not values:
        raise ValueError(f"no fine-tuning metric {name!r}")
    return values[0]


def run_result(dataset: str, arm: Arm, seed: int, budget: Budget, job: dict[str, Any],
               points: list[dict[str, Any]]) -> RunResult:
    """What the study measures of one finished job, from its result and metric points only."""
    if job["status"] != "succeeded":
        raise RuntimeError(f"study job {job['id']} ({dataset} arm {arm.key} seed {seed}) "
                           f"{job['status']}: {job.get('error') or job.get('status_reason')}")
    hidden = hidden_of(budget, arm)
    pre = [p for p in points if p["phase"] == "pretrain"]
    started, finished = _when(job["started_at"]), _when(job["finished_at"])
    pre_end = max((_when(p["at"]) for p in pre), default=started)
    train_div = recon = None
    if arm.pretrain:
        train_div = [_series(pre, "pretrain", "cross_group_divergence", i)[-1] / h for i, h in enumerate(hidden)]
        recon = [_series(pre, "pretrain", "recon_error", i)[-1] for i in range(len(hidden))]
    return RunResult(
        dataset=dataset, arm=arm.key, seed=seed, job_id=job["id"],
        test_error=1.0 - float(job["result"]["test_accuracy"]),
        val_errors=[1.0 - v for v in _series(points, "finetune", "val_accuracy")],
        train_losses=_series(points, "finetune", "train_loss"),
        grad_layers=[_first_epoch(points, f"grad_norm.layer{i}") for i in range(len(hidden))],
        grad_head=_first_epoch(points, "grad_norm.head"),
        train_divergence=train_div, recon_errors=recon,
        pretrain_seconds=(pre_end - started).total_seconds(),
        finetune_seconds=(finished - pre_end).total_seconds(),
    )


def selection_score(run: RunResult, last: int = 3) -> float:
    """Model-selection criterion of the weight sweep: mean validation error of the last epochs
    (less noisy than the final epoch alone; never the test set)."""
    return float(np.mean(run.val_errors[-last:]))
