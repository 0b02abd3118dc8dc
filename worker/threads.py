"""How many CPU threads a training process's tensor operations use.

torch's default is one per CPU of the host, right for one job alone. Two training processes
on the same cores each run a team of that many threads, and the teams take turns on the cores
rather than share them (docs/benchmarks.md, "Jobs at once on one host"): a worker that runs K
jobs at once gives each job an equal share of the CPUs instead. An operator's own choice wins:
``DRTRAIN_TORCH_THREADS``, else ``OMP_NUM_THREADS`` (which torch reads itself).
"""
from __future__ import annotations

import os
from collections.abc import Mapping


def host_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this platform
        return os.cpu_count() or 1


def training_threads(setting: int, jobs_at_once: int, cpus: int,
                     environ: Mapping[str, str] = os.environ) -> int | None:
    """The thread count a training process should set: ``setting`` (DRTRAIN_TORCH_THREADS)
    when positive; None (leave torch as it is) when OMP_NUM_THREADS is set; else an equal
    share of ``cpus`` among ``jobs_at_once``, at least 1."""
    if setting > 0:
        return setting
    if environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, cpus // max(1, jobs_at_once))
