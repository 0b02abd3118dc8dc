"""CUDA graphs for training steps whose shapes repeat (a CD-k step, a fine-tuning step).

A step of a small network on a GPU is launch-bound: dozens of tiny kernels, each costing more
to launch than to run. A CUDA graph records the step's kernels once and replays them with one
launch. What makes replay equal the eager step, bit for bit:

* inputs come from static tensors the caller refills before each call (``copy_``), and the
  step touches only tensors that outlive it (parameters, optimiser buffers, chains);
* random draws use the trainer's generator, registered with the graph: each replay advances
  its Philox offset exactly as the eager kernels would (``CUDAGraph.register_generator_state``);
* the first ``WARMUP_STEPS`` calls of each variant run eagerly on a side stream (lazy buffers,
  cuBLAS workspaces and optimiser state are created outside the capture), then the step is
  captured once and replayed, including for the call that captured it;
* Python constants baked into a capture (the momentum of an epoch) select the variant: one
  graph per distinct ``key``.

Nothing here runs on CPU: ``use_graphs`` is False there and trainers call their steps directly.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor

WARMUP_STEPS = 3


def use_graphs(enabled: bool, device: torch.device, generator: torch.Generator) -> bool:
    """Graphs only on CUDA, and only with the generator on that device (draws from a CPU
    generator happen on the host at capture time and would repeat in every replay)."""
    return enabled and device.type == "cuda" and generator.device.type == "cuda"


class StepGraphs:
    """Runs ``step()`` eagerly for the first calls of each ``key``, then from a CUDA graph.

    ``step`` returns one tensor (the step's statistics). After a replay it is the graph's
    static output: use it (add it to an accumulator) before the next call.
    """

    def __init__(self, generator: torch.Generator, warmup: int = WARMUP_STEPS) -> None:
        self.generator = generator
        self.warmup = warmup
        self._graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._calls: dict[Hashable, int] = {}
        self._side: torch.cuda.Stream | None = None

    def __call__(self, key: Hashable, step: Callable[[], Tensor]) -> Tensor:
        found = self._graphs.get(key)
        if found is not None:
            found[0].replay()
            return found[1]
        calls = self._calls.get(key, 0) + 1
        self._calls[key] = calls
        if calls <= self.warmup:
            return self._eager(step)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)
        # Each variant keeps a memory pool of its own: sharing one is safe only when graphs
        # replay in the order they were captured. "thread_local": other threads of the
        # process (the worker's checkpoint uploader copying a state to the host) may use
        # CUDA while this thread captures; the capture stream is non-blocking, so their
        # work is neither captured nor synchronised with it.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = step()
        self._graphs[key] = (graph, out)
        graph.replay()  # capturing ran nothing: this call's step happens now
        return out

    def _eager(self, step: Callable[[], Tensor]) -> Tensor:
        if self._side is None:
            self._side = torch.cuda.Stream()
        current = torch.cuda.current_stream()
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            out = step()
        current.wait_stream(self._side)
        out.record_stream(current)
        return out
