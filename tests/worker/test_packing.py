"""Several jobs per GPU (worker/packing.py): memory estimates and admission, with fake device
memory, on CPU."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from drtrain.jobs.spec import JobSpec
from worker.packing import (
    HEADROOM,
    PROCESS_OVERHEAD,
    DeviceLedger,
    Slot,
    admit,
    device_slot,
    estimate_bytes,
)

GiB = 2**30


def _spec(**kw) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": "builtin:digits", **kw})


def test_estimate_grows_with_data_width_batch_and_pairs():
    base = estimate_bytes(_spec(), 1000, 64, 10)
    assert base > PROCESS_OVERHEAD
    assert estimate_bytes(_spec(), 60000, 784, 10) > base + 60000 * 784 * 4  # data on device
    assert estimate_bytes(_spec(model={"hidden_layers": [4000, 4000]}), 1000, 64, 10) > base
    sampled = _spec(pretrain={"batch_size": 1024,
                              "dr": {"weight": 1.0, "divergence": "bhattacharyya",
                                     "pairs": {"sample": 64}}})
    assert estimate_bytes(sampled, 1000, 64, 10) > base
    # a Fashion-MNIST job needs well under a GiB besides its CUDA context
    fashion = _spec(model={"hidden_layers": [500, 500]})
    assert estimate_bytes(fashion, 60000, 784, 10, 10000) - PROCESS_OVERHEAD < GiB


def _slot(mb: int, since: float = 0.0) -> Slot:
    return Slot("t", 1, mb * 2**20, since)


def test_admission_rules():
    # alone: always admitted, even past the free memory (it fails alone as it would anyway)
    assert admit(10 * GiB, 1 * GiB, [], now=0, jobs_per_device=4)
    # at most jobs_per_device
    assert not admit(1, 100 * GiB, [_slot(1)] * 4, now=0, jobs_per_device=4)
    # fits the free memory with the headroom
    assert admit(GiB, GiB + HEADROOM, [_slot(500, since=0)], now=100, jobs_per_device=4)
    assert not admit(GiB, GiB + HEADROOM - 1, [_slot(500, since=0)], now=100, jobs_per_device=4)
    # a job admitted moments ago may not have allocated yet: its estimate still counts
    assert not admit(GiB, 2 * GiB, [_slot(1024, since=99)], now=100, jobs_per_device=4)
    assert admit(GiB, 2 * GiB + HEADROOM, [_slot(1024, since=0)], now=100, jobs_per_device=4)


def test_ledger_acquire_release_and_dead_processes(tmp_path):
    ledger = DeviceLedger(tmp_path, "cuda:0", lambda: 8 * GiB, jobs_per_device=2,
                          clock=lambda: 1e9)
    a = ledger.try_acquire(2 * GiB)
    b = ledger.try_acquire(2 * GiB)
    assert a and b and ledger.try_acquire(GiB) is None  # two slots only
    ledger.release(a)
    assert [s.token for s in ledger.taken()] == [b.token]
    # a slot whose process died is dropped when the ledger is read
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ledger.release(b)
    with ledger._locked() as slots:
        slots.append(Slot("ghost", dead.pid, GiB, 0.0))
    assert ledger.taken() == []


def test_jobs_wait_for_memory_and_never_exceed_the_device(tmp_path):
    """Four jobs of 3 GiB on an 8 GiB device, up to 4 per device, in threads racing for the
    ledger: the estimates of jobs not yet settled count against the free memory, so never
    more than two run at once; each waits its turn; all run."""
    running, peak, done = [], [0], []
    guard = threading.Lock()

    def job(i: int) -> None:
        ledger = DeviceLedger(tmp_path, "cuda:0", lambda: 8 * GiB, jobs_per_device=4,
                              settle_seconds=60)
        with ledger.slot(3 * GiB, should_stop=lambda: False, poll=0.01) as slot:
            assert slot is not None
            with guard:
                running.append(i)
                peak[0] = max(peak[0], len(running))
            time.sleep(0.1)
            with guard:
                running.remove(i)
        done.append(i)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(done) == [0, 1, 2, 3]
    assert peak[0] == 2


def test_a_job_asked_to_stop_while_waiting_gets_no_slot(tmp_path):
    ledger = DeviceLedger(tmp_path, "cuda:0", lambda: 0, jobs_per_device=1)
    held = ledger.try_acquire(GiB)
    asked = iter([False, False, True])
    with ledger.slot(GiB, should_stop=lambda: next(asked), poll=0, sleep=lambda _: None) as slot:
        assert slot is None
    assert [s.token for s in ledger.taken()] == [held.token]


@pytest.mark.parametrize(("device", "per_device"), [("cpu", 4), ("cuda", 1)])
def test_cpu_jobs_and_one_job_per_device_take_no_slot(tmp_path, device, per_device):
    with device_slot(tmp_path, device, GiB, per_device, lambda: False) as admitted:
        assert admitted
    assert not (tmp_path / "devices").exists()
