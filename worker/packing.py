"""Several jobs on one GPU: estimate a job's device memory, admit what fits.

A worker started with ``--concurrency K`` runs K jobs in K processes. With
``DRTRAIN_JOBS_PER_DEVICE`` > 1 those processes may share one CUDA device; before a job moves
its data there it takes a slot in a ledger shared by the processes of this machine (a JSON
file under the data folder, under an exclusive ``flock``):

* at most ``jobs_per_device`` jobs hold a slot of a device at once;
* a job is admitted when its estimate (``estimate_bytes``) fits the device's free memory as
  the driver reports it, less the estimates of jobs admitted in the last ``settle_seconds``
  (they may not have allocated yet), less a headroom;
* a job that fits nowhere is admitted when the device has no other job (it may then run out
  of memory, and fail, exactly as it would alone);
* slots of processes that died are dropped when the ledger is read.

A job waits for its slot (polling, and stopping if asked: cancel, lease lost) with its
heartbeat running. CPU jobs take no slot. ``admit`` is the pure decision, tested with fake
device memory; ``DeviceLedger.slot`` is the locking around it.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from drtrain.jobs.spec import JobSpec

MiB = 2**20
# Per process: the CUDA context and the caching allocator's slack, which a process holds
# before its first tensor.
PROCESS_OVERHEAD = 512 * MiB
HEADROOM = 256 * MiB
SETTLE_SECONDS = 30.0
FLOAT = 4


@dataclass(frozen=True)
class Slot:
    token: str
    pid: int
    bytes: int
    since: float


def estimate_bytes(spec: JobSpec, n_rows: int, n_features: int, n_classes: int,
                   n_eval_rows: int = 0) -> int:
    """Device memory a job needs at its peak, float32, generously rounded: the splits on the
    device, every layer's propagated training data (a DBN keeps the layer below's means while
    training the next), parameters with their update buffers, a batch's activations (DR's
    per-pair blocks included), and the process's CUDA context."""
    dims = [n_features, *spec.model.hidden_layers]
    params = sum(a * b + a + b for a, b in zip(dims[:-1], dims[1:]))
    params += dims[-1] * max(n_classes, 1) + max(n_classes, 1)
    data = (n_rows + n_eval_rows) * n_features
    propagated = 2 * n_rows * max(spec.model.hidden_layers) if spec.pretrain is not None else 0
    batch = 8192 if spec.pretrain is None else _batch(spec.pretrain.batch_size)
    if spec.finetune is not None:
        batch = max(batch, _batch(spec.finetune.batch_size))
    widest = max(dims)
    activations = 16 * batch * widest
    pairs = 4 * 2**22  # blocks of the exact pass / the sampled pass (dr_core.pair_kernels)
    if spec.pretrain is not None and spec.pretrain.dr is not None and \
            spec.pretrain.dr.pairs != "all":
        pairs = max(pairs, 6 * batch * spec.pretrain.dr.pairs.sample * widest)  # type: ignore[union-attr]
    # parameters x 4: weights, velocity or momentum (Adam: 2), gradients
    total = FLOAT * (4 * params + data + propagated + activations + pairs)
    return int(total * 1.25) + PROCESS_OVERHEAD


def _batch(size: int | str) -> int:
    return 128 if size == "auto" else int(size)


def admit(need: int, free: int, slots: list[Slot], *, now: float, jobs_per_device: int,
          settle_seconds: float = SETTLE_SECONDS, headroom: int = HEADROOM) -> bool:
    """Whether a job needing ``need`` bytes may start on a device with ``free`` bytes free
    (as the driver reports) and these ``slots`` taken (see the module docstring)."""
    if len(slots) >= jobs_per_device:
        return False
    if not slots:
        return True
    unsettled = sum(s.bytes for s in slots if now - s.since < settle_seconds)
    return need + unsettled + headroom <= free


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DeviceLedger:
    """The slots of one device, in ``<folder>/<device>.json``; ``free_bytes`` reads the
    device's free memory (``torch.cuda.mem_get_info`` in the worker, a fake in tests)."""

    def __init__(self, folder: Path, device: str, free_bytes: Callable[[], int], *,
                 jobs_per_device: int, clock: Callable[[], float] = time.time,
                 settle_seconds: float = SETTLE_SECONDS) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{device.replace(':', '_')}.json"
        self.lock_path = self.path.with_suffix(".lock")
        self.free_bytes, self.jobs_per_device, self.clock = free_bytes, jobs_per_device, clock
        self.settle_seconds = settle_seconds

    @contextmanager
    def _locked(self) -> Iterator[list[Slot]]:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                slots = [Slot(**s) for s in json.loads(self.path.read_text() or "[]")] \
                    if self.path.exists() else []
                slots = [s for s in slots if _alive(s.pid)]
                yield slots
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps([asdict(s) for s in slots]))
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def try_acquire(self, need: int) -> Slot | None:
        with self._locked() as slots:
            now = self.clock()
            if not admit(need, self.free_bytes(), slots, now=now,
                         jobs_per_device=self.jobs_per_device,
                         settle_seconds=self.settle_seconds):
                return None
            slot = Slot(uuid.uuid4().hex, os.getpid(), need, now)
            slots.append(slot)
            return slot

    def release(self, slot: Slot) -> None:
        with self._locked() as slots:
            slots[:] = [s for s in slots if s.token != slot.token]

    def taken(self) -> list[Slot]:
        with self._locked() as slots:
            return list(slots)

    @contextmanager
    def slot(self, need: int, *, should_stop: Callable[[], bool], poll: float = 1.0,
             sleep: Callable[[float], None] = time.sleep) -> Iterator[Slot | None]:
        """Hold a slot for the block; waits until admitted. Yields None (without a slot) when
        ``should_stop`` turns true while waiting: the caller stops the job as usual."""
        slot = self.try_acquire(need)
        while slot is None:
            if should_stop():
                yield None
                return
            sleep(poll)
            slot = self.try_acquire(need)
        try:
            yield slot
        finally:
            self.release(slot)


@contextmanager
def device_slot(data_dir: Path, device: str, need: int, jobs_per_device: int,
                should_stop: Callable[[], bool]) -> Iterator[bool]:
    """The runner's entry: True once the job may use ``device`` (at once for CPU jobs, or
    when ``jobs_per_device`` is 1: one job per process as before), False if it was asked to
    stop while waiting for a slot."""
    if not device.startswith("cuda") or jobs_per_device <= 1:
        yield True
        return
    import torch

    index = torch.device(device).index or 0
    ledger = DeviceLedger(Path(data_dir) / "devices", f"cuda:{index}",
                          lambda: int(torch.cuda.mem_get_info(index)[0]),
                          jobs_per_device=jobs_per_device)
    with ledger.slot(need, should_stop=should_stop) as slot:
        yield slot is not None
