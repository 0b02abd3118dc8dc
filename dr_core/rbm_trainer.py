"""The epoch loop of one RBM layer: CD-k / PCD with generative DR, metrics, resumable state."""
from __future__ import annotations

from typing import Any

import torch

from dr_core.batches import cross_pairs_per_batch, plan_generator, shuffled_batches, side_row_batches
from dr_core.config import RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.cuda_graphs import StepGraphs, use_graphs
from dr_core.events import Event
from dr_core.groups import Groups, group_ids
from dr_core.rbm import RBM, cd_step
from dr_core.rbm_metrics import MetricData, epoch_metrics


class _CDSteps:
    """cd_step on the batch X[idx] of the training set (on the device): eagerly, or from CUDA
    graphs for full-size batches. Holds what the steps update: velocity and chains.

    ``ids``/``n_groups`` are the dense group ids of the side labels (``group_ids``, read once
    per layer), so a step reads nothing back from the device. ``batch_groups`` builds the
    ``Groups`` of all of an epoch's batches at once (a few operations per epoch), so an eager
    DR step does no group bookkeeping; a captured step builds its batch's from the ids inside
    the graph (its replays then cost no launches for it). The same ``Groups`` give the epoch's
    pair count, with DR or without.
    """

    def __init__(self, rbm: RBM, cfg: RBMConfig, train: Examples, run: RunContext,
                 velocity: dict[str, torch.Tensor], chains: torch.Tensor | None,
                 groups: tuple[torch.Tensor, int] | None) -> None:
        self.rbm, self.cfg, self.X, self.generator = rbm, cfg, train.X, run.generator
        self.velocity, self.chains = velocity, chains
        self.groups = groups
        self.dr_on = cfg.dr is not None and cfg.dr.active and groups is not None
        self.ids, self.n_groups = groups if self.dr_on else (None, None)
        graphs = use_graphs(run.cuda_graphs, train.X.device, run.generator)
        self.graphs = StepGraphs(run.generator) if graphs else None
        self.idx = torch.empty(cfg.batch_size, dtype=torch.long, device=train.X.device) \
            if graphs else None

    def batch_groups(self, batches: list[torch.Tensor]) -> list[Groups] | None:
        """Each batch's ``Groups`` (None without side labels)."""
        if self.groups is None:
            return None
        return Groups.of_batches(batches, *self.groups, self.X.dtype)

    def __call__(self, idx: torch.Tensor, groups: Groups | None, epoch: int) -> torch.Tensor:
        """Train on X[idx] (``groups`` its ``batch_groups`` entry, or None); returns the step's
        DR value (0-d, use it before the next call)."""
        groups = groups if self.dr_on else None
        if self.graphs is None or idx.numel() != self.cfg.batch_size:
            return self._step(idx, groups, epoch)
        self.idx.copy_(idx)  # type: ignore[union-attr]
        # momentum is the one constant of an epoch baked into a capture
        return self.graphs(self.cfg.momentum_at(epoch), lambda: self._step(self.idx, None, epoch))

    def _step(self, idx: torch.Tensor, groups: Groups | None, epoch: int) -> torch.Tensor:
        side = groups if groups is not None or self.ids is None else self.ids[idx]
        stats, self.chains = cd_step(self.rbm, self.X[idx], side, self.cfg, self.velocity,
                                     generator=self.generator, chains=self.chains, epoch=epoch,
                                     n_groups=self.n_groups)
        return stats["dr"]


def _layer_state(rbm: RBM, velocity: dict[str, torch.Tensor], chains: torch.Tensor | None,
                 generator: torch.Generator, layer: int, epoch: int) -> dict[str, Any]:
    """Everything needed to continue this layer exactly after ``epoch`` epochs."""
    state: dict[str, Any] = {
        "phase": "pretrain", "layer": layer, "epoch": epoch,
        "current.W": rbm.W.detach().clone(), "current.b": rbm.b.detach().clone(),
        "current.c": rbm.c.detach().clone(),
        "generator": generator.get_state(),
    }
    for key, t in velocity.items():
        state[f"current.velocity.{key}"] = t.clone()
    if chains is not None:
        state["current.chains"] = chains.clone()
    return state


def _restore(rbm: RBM, resume: dict[str, Any], generator: torch.Generator
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, int]:
    """Load a ``_layer_state`` into rbm and generator: (velocity, chains, epochs done)."""
    dev, dt = rbm.W.device, rbm.W.dtype
    with torch.no_grad():
        for name in ("W", "b", "c"):
            getattr(rbm, name).copy_(resume[f"current.{name}"].to(dev, dt))
    velocity = {k: resume[f"current.velocity.{k}"].to(dev, dt) for k in ("W", "b", "c")
                if f"current.velocity.{k}" in resume}
    chains = resume.get("current.chains")
    chains = chains.to(dev, dt).clone() if chains is not None else None
    generator.set_state(resume["generator"])
    return velocity, chains, int(resume["epoch"])


def _check(cfg: RBMConfig, X: torch.Tensor) -> None:
    """Bernoulli visible units need data in [0, 1]: one pass over X for both extremes."""
    if cfg.visible == "bernoulli" and X.numel():
        lo, hi = torch.aminmax(X)
        if float(lo) < 0.0 or float(hi) > 1.0:
            raise ValueError("X: bernoulli visible units need data in [0, 1]")


def _epoch_batches(cfg: RBMConfig, n: int, groups: tuple[torch.Tensor, int] | None,
                   run: RunContext, layer: int, epoch: int, device: torch.device) -> list[torch.Tensor]:
    """The epoch's batches: side rows in each (``dr_core.batches``) when asked for and the data
    carry side labels, else one shuffle drawn from the training generator."""
    if cfg.side_rows_per_batch and groups is not None:
        plan = plan_generator(run.generator.initial_seed(), layer, epoch, device)
        return side_row_batches(*groups, cfg.batch_size, cfg.side_rows_per_batch, plan)
    return shuffled_batches(n, cfg.batch_size, run.generator, device)


def train_rbm(cfg: RBMConfig, train: Examples, run: RunContext, *,
              holdout: torch.Tensor | None = None, layer: int = 0) -> tuple[RBM, list[Event]]:
    """Train one RBM layer on ``train`` (X (N, D), side (N,) DR groups or None) for ``cfg.epochs``.

    After each epoch ``run.callback.on_epoch_end`` gets Event("pretrain", layer, epoch,
    metrics, epoch / cfg.epochs, state) with metrics ``recon_error``, ``free_energy_gap``
    (only with ``holdout`` (M, D)), ``pseudo_log_likelihood`` (Bernoulli visible only), ``dr``
    (mean over batches; only with DR on), ``dr_pairs_per_batch`` (mean cross-group pairs in a batch: what DR
    had to work with; 0 without side labels) and ``cross_group_divergence``. ``recon_error``,
    ``free_energy_gap``, ``pseudo_log_likelihood`` and ``cross_group_divergence`` are estimates
    on a fixed sample of at most 512 training (and held-out) rows (``dr_core.rbm_metrics``), so
    that they cost a bounded share of an epoch; ``dr`` and ``dr_pairs_per_batch`` cover every
    batch. With ``cfg.side_rows_per_batch`` every batch holds that many rows with a side value
    (``dr_core.batches``). ``run.callback.should_stop()`` is polled after every batch (raises
    ``TrainingStopped``). ``run.resume`` is an event state of this layer (keys ``current.*``,
    ``epoch``, ``generator``). All random draws use
    ``run.generator``, which must live on X's device. Side -1 marks a row without a group:
    it trains the likelihood but pairs with no row in DR. Nothing is read back to the host
    inside an epoch. Returns the layer and its events.
    """
    X, side, generator = train.X, train.side, run.generator
    _check(cfg, X)
    fresh = run.resume is None  # a resumed layer must not consume random numbers for its init
    rbm = RBM(X.shape[1], cfg.n_hidden, cfg.visible, init_std=cfg.init_std if fresh else 0.0,
              generator=generator, device=X.device, dtype=X.dtype)
    velocity, chains, start = ({}, None, 0) if fresh else _restore(rbm, run.resume, generator)
    groups = group_ids(side) if side is not None else None
    steps = _CDSteps(rbm, cfg, train, run, velocity, chains, groups)
    metric_data = MetricData.choose(X, side, holdout, layer)
    n, events = X.shape[0], []
    for epoch in range(start, cfg.epochs):
        batches = _epoch_batches(cfg, n, groups, run, layer, epoch, X.device)
        dr_sum = torch.zeros((), device=X.device, dtype=X.dtype)
        batch_groups = steps.batch_groups(batches)
        for i, idx in enumerate(batches):
            dr = steps(idx, batch_groups[i] if batch_groups else None, epoch)
            if steps.dr_on:  # without DR the value is no measurement: nothing to add up
                dr_sum += dr
            run.stop_if_asked(f"pretraining layer {layer}, epoch {epoch + 1}")
        pairs = cross_pairs_per_batch(batch_groups) if batch_groups else 0.0
        dr_mean = dr_sum / max(1, len(batches)) if steps.dr_on else None
        metrics = epoch_metrics(rbm, metric_data, epoch, dr_mean, pairs)
        event = Event("pretrain", layer, epoch + 1, metrics, (epoch + 1) / cfg.epochs,
                      _layer_state(rbm, velocity, steps.chains, generator, layer, epoch + 1))
        events.append(event)
        run.callback.on_epoch_end(event)
    return rbm, events
