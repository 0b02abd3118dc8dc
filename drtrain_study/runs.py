"""The arms of the reproduction study, the JobSpec each arm submits, and what the study reads
back from a finished job (its metric points and result, over HTTP).

Every arm of a regime shares the data, the fine-tuning budget and the tuning grids; arms differ
in the initialisation (random Glorot, small normal, or DBN pretraining), in whether pretraining
guarantees labelled rows in every batch ("side rows"), and in which DR term they add.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    pretrain: bool = False
    side_rows: bool = False  # pretraining batches hold at least Budget.side_rows labelled rows
    gen: str | None = None  # generative DR's divergence
    gen_pairs: Any = "all"
    feat: bool = False  # feature DR in fine-tuning
    init: str = "glorot"  # random initialisation of layers not pretrained
    deep: bool = False  # the deep architecture (Budget.deep_hidden) instead of Budget.hidden
    control: str | None = None  # the same recipe without DR
    glorot: str | None = None  # the random-initialisation reference of the same depth
    also: tuple[str, ...] = ()  # further references a DR arm is tested against

    @property
    def is_dr(self) -> bool:
        return self.gen is not None or self.feat

    @property
    def weight_path(self) -> str | None:
        """The JobSpec path of this arm's DR weight (lambda), swept on validation."""
        if self.gen:
            return "pretrain.dr.weight"
        return "finetune.dr.weight" if self.feat else None


ARMS = (
    Arm("glorot", "random Glorot init + backprop"),
    Arm("dbn", "DBN, no DR", pretrain=True),
    Arm("dbn_sr", "DBN + side rows", pretrain=True, side_rows=True),
    Arm("dr", "DBN + generative DR (hellinger)", pretrain=True, gen="hellinger", control="dbn",
        glorot="glorot"),
    # also against "dr": what side rows add to the same DR (the candidate default when labels are scarce)
    Arm("dr_sr", "DBN + generative DR (hellinger) + side rows", pretrain=True, side_rows=True,
        gen="hellinger", control="dbn_sr", glorot="glorot", also=("dr",)),
    Arm("bh_sr", "DBN + generative DR (bhattacharyya, 16 sampled pairs) + side rows", pretrain=True,
        side_rows=True, gen="bhattacharyya", gen_pairs={"sample": 16}, control="dbn_sr", glorot="glorot"),
    Arm("feat", "Glorot init + feature DR (euclidean, per unit, all layers)", feat=True, control="glorot",
        glorot="glorot"),
    Arm("deep_glorot", "deep: random Glorot init", deep=True),
    Arm("deep_normal", "deep: N(0, 0.01) init", init="normal", deep=True),
    Arm("deep_dbn_sr", "deep: DBN + side rows", pretrain=True, side_rows=True, deep=True),
    Arm("deep_dr_sr", "deep: DBN + generative DR (hellinger) + side rows", pretrain=True, side_rows=True,
        gen="hellinger", deep=True, control="deep_dbn_sr", glorot="deep_glorot", also=("deep_normal",)),
)
ARM_BY_KEY = {a.key: a for a in ARMS}


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
    finetune_momentum: float = 0.9
    init_std: float = 0.01  # std of the "normal" initialisation

    @property
    def side_rows(self) -> int:
        """Labelled rows guaranteed in every pretraining batch of a "+ side rows" arm."""
        return self.pretrain_batch // 4


@dataclass
class RunResult:
    dataset: str
    arm: str
    seed: int
    job_id: str
    learning_rate: float
    weight: float | None  # DR lambda; None for an arm without DR
    test_error: float
    val_errors: list[float]
    train_losses: list[float]
    grad_layers: list[float]  # mean ‖dL_class/dW‖ per hidden layer over the first fine-tuning epoch
    grad_head: float
    grad_dr_layers: list[float] | None  # the DR term's gradient norm, first epoch (feature DR only)
    dr_pairs: list[float] | None  # per RBM layer: mean cross-group pairs per batch over pretraining
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


def _pretrain(budget: Budget, arm: Arm, weight: float | None) -> dict[str, Any] | None:
    if not arm.pretrain:
        return None
    gen = ({"weight": weight, "divergence": arm.gen, "pairs": arm.gen_pairs, "normalize": "sum"}
           if arm.gen and weight else None)
    # Side rows stated either way: the service's "auto" would switch them on by itself.
    return {"epochs": budget.pretrain_epochs, "batch_size": budget.pretrain_batch,
            "learning_rate": budget.pretrain_lr, "cd_k": 1, "dr": gen,
            "side_rows_per_batch": budget.side_rows if arm.side_rows else 0}


def job_spec(budget: Budget, arm: Arm, learning_rate: float, weight: float | None, *, dataset_id: str,
             test_id: str, validation_fraction: float, seed: int, name: str, tags: list[str]
             ) -> dict[str, Any]:
    """The POST /v1/jobs body of one arm at one setting and seed. A DR weight of 0 (or None)
    writes the DR section as null: the spec is then exactly its no-DR control's."""
    disc = ({"weight": weight, "distance": "euclidean", "layers": "all", "pairs": "all",
             "normalize": "per_unit"}
            if arm.feat and weight else None)
    finetune = {"epochs": budget.finetune_epochs, "batch_size": budget.finetune_batch, "optimizer": "sgd",
                "learning_rate": learning_rate, "momentum": budget.finetune_momentum,
                "activation": "sigmoid", "init": arm.init, "init_std": budget.init_std, "dr": disc}
    return {"name": name, "tags": tags, "dataset_id": dataset_id, "test_dataset_id": test_id,
            "validation_fraction": validation_fraction,
            "model": {"hidden_layers": list(hidden_of(budget, arm)), "visible_units": "bernoulli"},
            "pretrain": _pretrain(budget, arm, weight), "finetune": finetune, "seed": seed, "device": "auto"}


def canonical_key(spec: dict[str, Any]) -> str:
    """What makes two jobs the same training run: the spec without its name and tags."""
    return json.dumps({k: v for k, v in spec.items() if k not in ("name", "tags")}, sort_keys=True)


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)  # Python >= 3.11 reads the API's "...Z"


def _series(points: list[dict[str, Any]], phase: str, name: str, layer: int | None = None) -> list[float]:
    """Values of one metric in epoch order (the last point of an epoch wins: a retried attempt)."""
    by_epoch = {p["epoch"]: p["value"] for p in points
                if p["phase"] == phase and p["name"] == name and (layer is None or p["layer"] == layer)}
    return [float(by_epoch[e]) for e in sorted(by_epoch)]


def _first_epochs(points: list[dict[str, Any]], names: list[str]) -> list[float] | None:
    """First fine-tuning epoch's value of each metric; None when the job reported none of them."""
    series = [_series(points, "finetune", name) for name in names]
    if not any(series):
        return None
    if not all(series):
        raise ValueError(f"fine-tuning metrics missing among {names}")
    return [s[0] for s in series]


def _pairs_per_batch(points: list[dict[str, Any]], n_layers: int) -> list[float] | None:
    """Mean over pretraining epochs of each layer's cross-group pairs per batch."""
    series = [_series(points, "pretrain", "dr_pairs_per_batch", i) for i in range(n_layers)]
    return [float(np.mean(s)) for s in series] if all(series) else None


def run_result(dataset: str, arm: Arm, seed: int, learning_rate: float, weight: float | None, budget: Budget,
               job: dict[str, Any], points: list[dict[str, Any]]) -> RunResult:
    """What the study measures of one finished job, from its result and metric points only."""
    if job["status"] != "succeeded":
        raise RuntimeError(f"study job {job['id']} ({dataset} arm {arm.key} seed {seed}) "
                           f"{job['status']}: {job.get('error') or job.get('status_reason')}")
    n_layers = len(hidden_of(budget, arm))
    started, finished = _when(job["started_at"]), _when(job["finished_at"])
    pre_end = max((_when(p["at"]) for p in points if p["phase"] == "pretrain"), default=started)
    grads = _first_epochs(points, [f"grad_norm.layer{i}" for i in range(n_layers)] + ["grad_norm.head"])
    if grads is None:
        raise ValueError(f"job {job['id']} reported no gradient norms")
    return RunResult(
        dataset=dataset, arm=arm.key, seed=seed, job_id=job["id"], learning_rate=learning_rate, weight=weight,
        test_error=1.0 - float(job["result"]["test_accuracy"]),
        val_errors=[1.0 - v for v in _series(points, "finetune", "val_accuracy")],
        train_losses=_series(points, "finetune", "train_loss"),
        grad_layers=grads[:-1], grad_head=grads[-1],
        grad_dr_layers=_first_epochs(points, [f"grad_norm_dr.layer{i}" for i in range(n_layers)]),
        dr_pairs=_pairs_per_batch(points, n_layers) if arm.pretrain else None,
        pretrain_seconds=(pre_end - started).total_seconds(),
        finetune_seconds=(finished - pre_end).total_seconds(),
    )


def selection_score(run: RunResult, last: int = 3) -> float:
    """Model-selection criterion of the tuning: mean validation error of the last epochs
    (less noisy than the final epoch alone; never the test set)."""
    return float(np.mean(run.val_errors[-last:]))
