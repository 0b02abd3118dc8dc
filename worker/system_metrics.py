"""What the worker's process uses, measured at each epoch's end and recorded as metric points
beside that epoch's metrics (their names: ``dr_core.events.SYSTEM_METRICS``).

Standard library and torch only: CPU time from ``time.process_time`` (every thread of the
process), resident memory from ``/proc/self/statm`` (elsewhere the peak from ``getrusage``), and
on a CUDA device the memory PyTorch's allocator holds now and at its peak since training began,
with the device's utilisation where NVML (``pynvml``) is installed; without it that reading is
left out rather than guessed. A Celery worker process runs one job at a time, so the process's
figures are the job's.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import resource
import sys
import time
from collections.abc import Callable

import torch

from dr_core.events import SYSTEM_METRICS, Callback, Event, EventAdapter

log = logging.getLogger(__name__)

CPU, RSS, GPU_UTIL, GPU_ALLOCATED, GPU_PEAK = SYSTEM_METRICS
_STATM = "/proc/self/statm"


def resident_bytes() -> int:
    """The process's resident memory now (Linux), else its peak so far."""
    try:
        with open(_STATM, encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class SystemSampler:
    """Each ``sample()`` gives the readings since the previous one (CPU %) or now (memory)."""

    def __init__(self, device: str, *, cpu_clock: Callable[[], float] = time.process_time,
                 wall_clock: Callable[[], float] = time.monotonic) -> None:
        self.cpu_clock, self.wall_clock = cpu_clock, wall_clock
        self.cuda = torch.device(device) if torch.device(device).type == "cuda" else None
        self.nvml = self.cuda is not None and importlib.util.find_spec("pynvml") is not None
        if self.cuda is not None:
            torch.cuda.reset_peak_memory_stats(self.cuda)  # the peak of this job, not the process
        self._cpu, self._wall = cpu_clock(), wall_clock()

    def sample(self) -> dict[str, float]:
        cpu, wall = self.cpu_clock(), self.wall_clock()
        readings = {RSS: float(resident_bytes())}
        if wall > self._wall:
            readings[CPU] = 100.0 * (cpu - self._cpu) / (wall - self._wall)
        self._cpu, self._wall = cpu, wall
        if self.cuda is not None:
            readings[GPU_ALLOCATED] = float(torch.cuda.memory_allocated(self.cuda))
            readings[GPU_PEAK] = float(torch.cuda.max_memory_allocated(self.cuda))
            if (util := self._utilization()) is not None:
                readings[GPU_UTIL] = util
        return readings

    def _utilization(self) -> float | None:
        if not self.nvml:
            return None
        try:
            return float(torch.cuda.utilization(self.cuda))
        except Exception as exc:  # noqa: BLE001 - NVML's errors have classes of their own
            log.warning("GPU utilisation unreadable, no longer recorded: %s", exc)
            self.nvml = False
            return None


class WithSystemMetrics(EventAdapter):
    """``inner`` receiving every epoch's event with the sampler's readings among its metrics
    (a layer's end records no metrics, so it passes unchanged)."""

    def __init__(self, inner: Callback, sampler: SystemSampler) -> None:
        super().__init__(inner, lambda event: dataclasses.replace(
            event, metrics={**event.metrics, **sampler.sample()}))

    def on_layer_end(self, event: Event) -> None:
        self.inner.on_layer_end(event)
