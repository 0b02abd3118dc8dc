"""What Hellinger DR adds to a CD step inside dr_core's trainer, and how much of it grows with
the hidden layer:

    python -m bench.dr_step_cost [--threads 1 2] [--repeats 5] [--rows 10000] [--no-write]

bench/rbm_throughput.py's DR contender (one epoch of CD-1, 784 -> H, batches of 128, the class
labels as groups, all cross-group pairs) for H = 16 and H = 500, with the step's DR call
(``dr_core.rbm.positive_statistics``, which cd_step calls once per batch) timed where the
trainer makes it, and the plain trainer's epoch (no DR) interleaved with it. At H = 16 the
call's arithmetic is negligible: what it costs there is the call's fixed part (its tensor
operations' dispatch and the Python around them), which a larger layer pays too. Each figure is
the median over ``--repeats`` epochs of the epoch's median call, with the min and max. Prints a
markdown section and writes it to docs/benchmarks.md (unless ``--no-write``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dr_core.rbm as rbm_module
from bench import benchmarks_doc
from bench.rbm_throughput import BATCH, HIDDEN, LR, epoch_arguments, load_data
from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.rbm_trainer import train_rbm

BEGIN, END = "<!-- dr-step-cost:begin -->", "<!-- dr-step-cost:end -->"
HIDDEN_SIZES = (16, HIDDEN)  # negligible arithmetic, and the throughput bench's layer


class TimedDR:
    """Replaces ``dr_core.rbm.positive_statistics`` while in use, timing every call."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._real = rbm_module.positive_statistics

    def __enter__(self) -> TimedDR:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return self._real(*args, **kwargs)
            finally:
                self.calls.append(time.perf_counter() - start)

        rbm_module.positive_statistics = timed
        return self

    def __exit__(self, *exc: object) -> None:
        rbm_module.positive_statistics = self._real


class CountedOps(TorchDispatchMode):
    """Counts the tensor operations dispatched while in use (views and scalar reads too)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_call(X: torch.Tensor, y: torch.Tensor) -> int:
    """The tensor operations of one DR call of the trainer (its first batch's)."""
    counts: list[int] = []
    real = rbm_module.positive_statistics

    def counted(*args: Any, **kwargs: Any) -> Any:
        if counts:
            return real(*args, **kwargs)
        with CountedOps() as ops:
            out = real(*args, **kwargs)
        counts.append(ops.count)
        return out

    rbm_module.positive_statistics = counted
    try:
        epoch(X[:BATCH], y[:BATCH], HIDDEN_SIZES[0], True)()
    finally:
        rbm_module.positive_statistics = real
    return counts[0]


def epoch(X: torch.Tensor, y: torch.Tensor, hidden: int, dr: bool) -> Callable[[], None]:
    cfg = RBMConfig(n_hidden=hidden, batch_size=BATCH, learning_rate=LR, epochs=1,
                    dr=PosteriorDRConfig(weight=0.1, divergence="hellinger", pairs="all")
                    if dr else None)
    train = Examples(X, side=y if dr else None)
    return lambda: train_rbm(cfg, train, RunContext(torch.Generator().manual_seed(0)))


def measure(X: torch.Tensor, y: torch.Tensor, threads: list[int], repeats: int
            ) -> dict[tuple[int, int], dict[str, list[float]]]:
    """(threads, H) -> {"call": epoch medians of the DR call (s), "step": plain step (s)}."""
    batches = -(-X.shape[0] // BATCH)
    out: dict[tuple[int, int], dict[str, list[float]]] = {}
    for n in threads:
        torch.set_num_threads(n)
        for hidden in HIDDEN_SIZES:
            with_dr, plain = epoch(X, y, hidden, True), epoch(X, y, hidden, False)
            with TimedDR():
                with_dr()  # warm-up
            plain()
            runs: dict[str, list[float]] = {"call": [], "step": []}
            for _ in range(repeats):
                with TimedDR() as timer:
                    with_dr()
                runs["call"].append(statistics.median(timer.calls))
                start = time.perf_counter()
                plain()
                runs["step"].append((time.perf_counter() - start) / batches)
            out[(n, hidden)] = runs
            print(f"{n} thread(s), H={hidden}: DR call {statistics.median(runs['call']) * 1e6:.0f} us, "
                  f"plain step {statistics.median(runs['step']) * 1e3:.2f} ms", flush=True)
    return out


def _spread(values: list[float], scale: float, digits: int) -> str:
    return (f"{statistics.median(values) * scale:.{digits}f} "
            f"({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})")


def section(results: dict[tuple[int, int], dict[str, list[float]]], n_ops: int,
            args: argparse.Namespace) -> str:
    rows = "\n".join(
        f"| {n} | {hidden} | {_spread(r['call'], 1e6, 0)} | {_spread(r['step'], 1e3, 2)} | "
        f"{statistics.median(r['call']) / statistics.median(r['step']):.1%} |"
        for (n, hidden), r in results.items())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{BEGIN}
### What DR adds to a step (`bench/dr_step_cost.py`)

Command: `python -m bench.dr_step_cost --threads {' '.join(map(str, args.threads))} --repeats {args.repeats} --rows {args.rows}`.
Date: {datetime.date.today().isoformat()}; torch {torch.__version__}; load average at the end: {load}.

The DR contender above at H = 16 and H = 500: the step's DR call timed where the trainer makes
it (median per epoch; median of {args.repeats} epochs, min-max in brackets), against the plain
trainer's time per step at the same size, interleaved. At H = 16 the call's arithmetic is
negligible: its time there is the fixed part ({n_ops} tensor operations, views and scalar
reads included, counted in this run, and the Python around them) that every layer size pays.

| threads | hidden units | DR call, us | plain step, ms | DR call / plain step |
|---|---|---|---|---|
{rows}
{END}
"""


def main() -> None:
    args = epoch_arguments(__doc__.splitlines()[0])
    X_np, y_np = load_data(args.rows)
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    text = section(measure(X, y, args.threads, args.repeats), operations_per_call(X, y), args)
    print(text)
    if not args.no_write:
        benchmarks_doc.write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
