"""One epoch of RBM training, as users run each library: scikit-learn, Learnergy and dr_core.

    python -m bench.rbm_throughput [--threads 1 2] [--repeats 5] [--rows 10000] [--no-write]

Every contender trains a fresh 784 -> 500 Bernoulli RBM for one epoch of CD-1 (batches of 128,
learning rate 0.05) on the first ``--rows`` Fashion-MNIST training images, in one process,
float32, with the same thread count for torch and for numpy's BLAS:

- ``sklearn fit``: ``BernoulliRBM(n_iter=1).fit(X)``;
- ``learnergy fit``: Learnergy's ``RBM.fit`` (its DataLoader, per-batch metrics), from the
  optional ``[bench]`` extra (skipped, and said so, when it is not installed);
- ``dr_core train_rbm``: the public trainer with its per-epoch work (metrics, snapshot, callback);
- ``dr_core train_rbm, Hellinger DR``: the same with DR (weight 0.1, all cross-group pairs,
  the class labels as groups);
- ``dr_core step loop``: the trainer's own batches (one shuffle, a gather per batch) through
  ``cd_step`` with no per-epoch work at all. It uses the trainer's config, so both do the same
  step (momentum and weight decay included): the trainer's time over the loop's is what its
  own work costs (the range check of X, the metrics on their sample, the end-of-epoch state,
  the stop poll and the DR sum of every batch).

Runs are interleaved: each repeat (round) runs every (thread count, contender), so load from
other processes hits all of them alike, and takes the best of ``BEST_OF`` back-to-back runs as
the round's figure; the table gives min / median / max of the rounds, ratios are of the medians
and, in brackets, the range of the ratios within a round. An fp32 GEMM
(2048^3, torch) measured in the same rounds gives the machine's matrix peak per thread count.
Prints a markdown section and writes it to docs/benchmarks.md (unless ``--no-write``).
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import logging
import os
import platform
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sklearn
import torch
from threadpoolctl import threadpool_limits

from bench import benchmarks_doc
from dr_core.batches import shuffled_batches
from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.rbm import RBM, cd_step
from dr_core.rbm_trainer import train_rbm

DATA = Path("/usr/share/datasets/fashion-mnist")
IMAGES, LABELS = DATA / "train-images-idx3-ubyte.gz", DATA / "train-labels-idx1-ubyte.gz"
HIDDEN, BATCH, LR = 500, 128, 0.05
WARM_ROWS = 1024
# A round's figure for a contender is the best of this many back-to-back runs: other tenants of
# a shared machine only ever add time, and a burst of their work that lasts a second or two
# then spoils one run of a round rather than the round.
BEST_OF = 3
BEGIN, END = "<!-- rbm-throughput:begin -->", "<!-- rbm-throughput:end -->"
SKLEARN, LEARNERGY = "sklearn fit", "learnergy fit"
TRAINER, DR, STEPS = "dr_core train_rbm", "dr_core train_rbm, Hellinger DR", "dr_core step loop"
# (numerator, denominator, limit, "min"|"max", what the ratio says): speed ratios are the
# denominator's epoch time over the numerator's; "min" targets are speed-ups, "max" ones costs.
TARGETS = [
    (TRAINER, SKLEARN, 1.0, "min", "trainer speed / sklearn `fit`"),
    (TRAINER, LEARNERGY, 1.5, "min", "trainer speed / Learnergy `fit`"),
    (DR, TRAINER, 1.1, "max", "Hellinger DR epoch time / plain trainer epoch time"),
    (TRAINER, STEPS, 1.05, "max", "trainer epoch time / its bare step loop (per-epoch work)"),
]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``rows`` Fashion-MNIST training images (float32 in [0, 1]) and their labels."""
    X = _read_idx(IMAGES)[:rows].reshape(-1, 784).astype(np.float32) / 255.0
    return np.ascontiguousarray(X), _read_idx(LABELS)[:rows].astype(np.int64)


def sklearn_fit(X: np.ndarray) -> Callable[[], None]:
    from sklearn.neural_network import BernoulliRBM

    def run() -> None:
        BernoulliRBM(n_components=HIDDEN, batch_size=BATCH, learning_rate=LR, n_iter=1,
                     random_state=0).fit(X)
    return run


def learnergy_fit(X: torch.Tensor, y: torch.Tensor) -> Callable[[], None] | None:
    try:
        from learnergy.models.bernoulli import RBM as LearnergyRBM
    except ImportError:
        return None
    dataset = torch.utils.data.TensorDataset(X, y)

    def run() -> None:
        torch.manual_seed(0)
        model = LearnergyRBM(n_visible=X.shape[1], n_hidden=HIDDEN, steps=1, learning_rate=LR)
        model.fit(dataset, batch_size=BATCH, epochs=1)
    return run


def trainer(X: torch.Tensor, y: torch.Tensor, dr: bool) -> Callable[[], None]:
    cfg = RBMConfig(n_hidden=HIDDEN, batch_size=BATCH, learning_rate=LR, epochs=1,
                    dr=PosteriorDRConfig(weight=0.1, divergence="hellinger", pairs="all") if dr else None)
    train = Examples(X, side=y if dr else None)
    return lambda: train_rbm(cfg, train, RunContext(torch.Generator().manual_seed(0)))


def step_loop(X: torch.Tensor) -> Callable[[], None]:
    """The trainer's epoch minus its per-epoch work: same init, shuffle and gathers."""
    cfg = RBMConfig(n_hidden=HIDDEN, batch_size=BATCH, learning_rate=LR, epochs=1)

    def run() -> None:
        g = torch.Generator().manual_seed(0)
        rbm = RBM(X.shape[1], HIDDEN, init_std=cfg.init_std, generator=g)
        velocity: dict[str, torch.Tensor] = {}
        for idx in shuffled_batches(X.shape[0], BATCH, g, X.device):
            cd_step(rbm, X[idx], None, cfg, velocity, generator=g, epoch=0)
    return run


GEMM_N, GEMM_REPS = 2048, 3


def gemm_peak() -> Callable[[], None]:
    a, b = torch.rand(GEMM_N, GEMM_N), torch.rand(GEMM_N, GEMM_N)
    out = torch.empty(GEMM_N, GEMM_N)

    def run() -> None:
        for _ in range(GEMM_REPS):
            torch.mm(a, b, out=out)
    return run


def contenders(X_np: np.ndarray, y_np: np.ndarray) -> tuple[dict[str, Callable[[], None]], list[str]]:
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    fns: dict[str, Callable[[], None] | None] = {
        SKLEARN: sklearn_fit(X_np), LEARNERGY: learnergy_fit(X, y), TRAINER: trainer(X, y, dr=False),
        DR: trainer(X, y, dr=True), STEPS: step_loop(X)}
    missing = [name for name, fn in fns.items() if fn is None]
    return {name: fn for name, fn in fns.items() if fn is not None}, missing


def _timed(fn: Callable[[], None], threads: int) -> float:
    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def _best_of(fn: Callable[[], None], threads: int) -> float:
    return min(_timed(fn, threads) for _ in range(BEST_OF))


def measure(fns: dict[str, Callable[[], None]], warm: dict[str, Callable[[], None]],
            threads: list[int], repeats: int) -> dict[tuple[str, int], list[float]]:
    """Seconds per run (the best of ``BEST_OF`` in a round), ``repeats`` interleaved rounds of
    every (contender, threads), after one run of each of ``warm`` (the same contenders on a
    slice: imports, allocator, thread pools) at every thread count."""
    fns = {**fns, "gemm": gemm_peak()}
    for t in threads:
        for fn in warm.values():
            _timed(fn, t)
    times: dict[tuple[str, int], list[float]] = {(name, t): [] for name in fns for t in threads}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # no contender always first
        for t in threads:
            for name in order:
                times[(name, t)].append(_best_of(fns[name], t))
                print(f"round {r + 1}/{repeats} threads={t} {name}: {times[(name, t)][-1]:.2f} s", flush=True)
    return times


def _ratio(times, num: str, den: str, t: int, kind: str) -> tuple[float, float, float]:
    """(median ratio, min, max over rounds): speed for "min" targets, time for "max" ones."""
    a, b = times[(num, t)], times[(den, t)]
    per_round = [y / x if kind == "min" else x / y for x, y in zip(a, b)]
    med = statistics.median(b) / statistics.median(a) if kind == "min" else \
        statistics.median(a) / statistics.median(b)
    return med, min(per_round), max(per_round)


def render(times, threads: list[int], rows: int, missing: list[str], repeats: int) -> str:
    gflop = 5 * 2 * rows * 784 * HIDDEN / 1e9  # CD-1: five (B x 784 x 500) products per batch
    gemm = GEMM_REPS * 2 * GEMM_N ** 3 / 1e9
    peak = {t: gemm / statistics.median(times[("gemm", t)]) for t in threads}
    names = [name for name in dict.fromkeys(n for n, _ in times) if name != "gemm"]
    lines = ["| contender | threads | epoch s min / median / max | samples/s | "
             "CD-1 GFLOP/s (of GEMM peak) | it / sklearn `fit` (speed) |", "|---|---|---|---|---|---|"]
    for t, name in ((t, name) for t in threads for name in names):
        s = times[(name, t)]
        med = statistics.median(s)
        vs = _ratio(times, name, SKLEARN, t, "min")[0] if (SKLEARN, t) in times else float("nan")
        lines.append(f"| {name} | {t} | {min(s):.2f} / {med:.2f} / {max(s):.2f} | {rows / med:,.0f} | "
                     f"{gflop / med:.1f} ({100 * gflop / med / peak[t]:.0f}%) | {vs:.2f}x |")
    lines.append("")
    lines += [f"- fp32 GEMM peak (torch, {GEMM_N}^3) at {t} thread{'s' if t > 1 else ''}: median "
              f"{peak[t]:.1f} GFLOP/s (min {gemm / max(times[('gemm', t)]):.1f}, "
              f"max {gemm / min(times[('gemm', t)]):.1f})." for t in threads]
    lines += [f"- {name}: not measured (not installed; `pip install -e '.[bench]'`)." for name in missing]
    lines += ["", "| target | threads | median (range over rounds) | limit | verdict |", "|---|---|---|---|---|"]
    for num, den, limit, kind, what in TARGETS:
        for t in threads:
            if (num, t) not in times or (den, t) not in times:
                lines.append(f"| {what} | {t} | not measured | {'>=' if kind == 'min' else '<='} {limit} | - |")
                continue
            med, lo, hi = _ratio(times, num, den, t, kind)
            ok = med >= limit if kind == "min" else med <= limit
            lines.append(f"| {what} | {t} | {med:.2f}x ({lo:.2f}-{hi:.2f}) | "
                         f"{'>=' if kind == 'min' else '<='} {limit}x | {'met' if ok else 'missed'} |")
    return "\n".join(lines)


def section(table: str, args: argparse.Namespace) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    versions = f"torch {torch.__version__}, numpy {np.__version__}, scikit-learn {sklearn.__version__}"
    try:
        from importlib.metadata import version
        versions += f", learnergy {version('learnergy')}"
    except Exception:  # noqa: BLE001 - not installed: the table says so
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{BEGIN}
## RBM training throughput against the peers (`bench/rbm_throughput.py`)

Command: `python -m bench.rbm_throughput --threads {' '.join(map(str, args.threads))} --repeats {args.repeats} --rows {args.rows}`.
Date: {datetime.date.today().isoformat()}; {versions}; CPU: {cpu}, {os.cpu_count()} logical cores.
Load average (1, 5, 15 min) at the end of the run: {load}. The cores were shared with other work
when the load average exceeds their number: absolute figures are then far below a quiet
machine's, and only the ratios, from interleaved rounds, compare.
Learnergy comes with `pip install -e '.[bench]'` (Learnergy 2 needs no torchvision).

One epoch of CD-1 on the first {args.rows:,} Fashion-MNIST training images (784 -> 500, batches
of 128, learning rate 0.05, float32), a fresh model each run, each library as its users call it
(see the module's docstring for each contender; dr_core's trainer keeps its default momentum and
weight decay, which the others do not have). {args.repeats} interleaved rounds, each contender's
figure in a round the best of {BEST_OF} back-to-back runs (other tenants of a shared machine only
ever add time); ratios are of medians, with the range of the per-round ratios in brackets.
"CD-1 GFLOP/s" is the five matrix products CD-1 needs per batch over the epoch's time, against
the GEMM peak of the same run.

{table}
{END}
"""


def epoch_arguments(description: str) -> argparse.Namespace:
    """The options of the one-epoch RBM benches: --threads, --repeats, --rows, --no-write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    return parser.parse_args()


def main() -> None:
    args = epoch_arguments(__doc__.splitlines()[0])
    X, y = load_data(args.rows)
    fns, missing = contenders(X, y)
    warm, _ = contenders(X[:WARM_ROWS], y[:WARM_ROWS])
    for name in list(logging.root.manager.loggerDict):  # Learnergy logs every epoch to stdout
        if name.startswith("learnergy"):
            logging.getLogger(name).setLevel(logging.WARNING)
    times = measure(fns, warm, args.threads, args.repeats)
    text = section(render(times, args.threads, args.rows, missing, args.repeats), args)
    print(text)
    if not args.no_write:
        benchmarks_doc.write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
