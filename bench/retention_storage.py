"""Object-store bytes of one job with and without checkpoint retention.

    python -m bench.retention_storage [--hidden 512,512] [--epochs 120] [--measure-epochs 2]

Runs the worker's job runner (no broker, SQLite and a local object folder in a temp dir) on
``builtin:digits`` with ``--measure-epochs`` pretraining epochs per layer and fine-tuning
epochs, recording every object it writes and deletes. Every checkpoint of one (phase, layer)
has the same size, so the totals for ``--epochs`` follow from those sizes times the counts
(``--measure-epochs 120`` runs the whole job for real instead). Reported:

- before retention: every layer/epoch checkpoint plus the final model (what the store held,
  forever, before retention existed);
- after retention, while running: at most ``--keep`` + 1 checkpoints (a new one is written
  before older ones are pruned) and the final model; the measured peak is printed too;
- after retention, once ended: the final model alone.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Job, JobStatus, utcnow
from drtrain.kit.settings import Settings
from drtrain.kit.storage import LocalStore, StoredObject
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name


class RecordingStore(LocalStore):
    """The local store, counting what is written and deleted (and the peak held)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: dict[str, int] = {}
        self.live = 0
        self.peak = 0

    def _record(self, stored: StoredObject) -> StoredObject:
        self.written[stored.key] = stored.size_bytes
        self.live += stored.size_bytes
        self.peak = max(self.peak, self.live)
        return stored

    def put_stream(self, key: str, chunks: Iterable[bytes], *,
                   max_bytes: int | None = None) -> StoredObject:
        return self._record(super().put_stream(key, chunks, max_bytes=max_bytes))

    def put_file(self, key: str, path: Path) -> StoredObject:
        return self._record(super().put_file(key, path))

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.live -= self.size(key)
        super().delete(key)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _run_job(hidden: list[int], epochs: int, keep: int) -> tuple[RecordingStore, int, float]:
    """Run the job in an embedded setup; (the store's record, bytes left after it, seconds)."""
    import torch

    from worker.runner import run_job

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="drtrain-retention-") as tmp:
        # Every epoch stored, so the table counts what a job that stored them all would keep.
        settings = Settings(data_dir=Path(tmp), database_url="", broker_url="", storage_url="",
                            environment="embedded", keep_checkpoints=keep,
                            checkpoint_every_epochs=1,
                            heartbeat_seconds=5, lease_seconds=600)
        upgrade(settings.resolved_database_url)
        engine = make_engine(settings.resolved_database_url)
        factory = make_sessionmaker(engine)
        store = RecordingStore(Path(tmp) / "objects")
        spec = spec_to_dict(JobSpec.model_validate({
            "dataset_id": "builtin:digits", "model": {"hidden_layers": hidden},
            "pretrain": {"epochs": epochs}, "finetune": {"epochs": epochs}, "device": "cpu",
            "seed": 0}))
        with session_scope(factory) as s:
            create_key(s, "bench")
            tenant = tenant_by_name(s, "bench")
            assert tenant is not None  # noqa: S101 - a bench script
            job = Job(tenant_id=tenant.id, dataset_id="builtin:digits", spec=spec,
                      status=JobStatus.queued, max_attempts=1, dispatched_at=utcnow())
            s.add(job)
            s.flush()
            job_id = job.id
        started = time.perf_counter()
        run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id="bench")
        wall = time.perf_counter() - started
        with factory() as s:
            done = s.get(Job, job_id)
            assert done is not None and done.status == JobStatus.succeeded, done  # noqa: S101
        engine.dispose()
        left = sum(p.stat().st_size for p in (Path(tmp) / "objects" / "jobs").rglob("*")
                   if p.is_file())
    return store, left, wall


def _groups(store: RecordingStore) -> tuple[dict[str, list[int]], int]:
    """Checkpoint sizes by (kind, phase, layer), and the final model's size."""
    per_group: dict[str, list[int]] = defaultdict(list)
    final = 0
    for key, size in store.written.items():
        name = key.rsplit("/", 1)[-1]
        if name == "model.safetensors":
            final = size
            continue
        # <attempt>-<phase>-<layer>-<epoch>-<kind>.safetensors
        _, phase, layer, _epoch, kind = name.removesuffix(".safetensors").split("-")
        per_group[f"{kind} {phase} layer {layer}"].append(size)
    return per_group, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", default="512,512")
    parser.add_argument("--epochs", type=int, default=120,
                        help="pretraining epochs per layer and fine-tuning epochs to report")
    parser.add_argument("--measure-epochs", type=int, default=2,
                        help="epochs actually run (checkpoint sizes do not depend on it)")
    parser.add_argument("--keep", type=int, default=2, help="DRTRAIN_KEEP_CHECKPOINTS")
    args = parser.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    store, left, wall = _run_job(hidden, args.measure_epochs, args.keep)
    per_group, final = _groups(store)
    scale = args.epochs / args.measure_epochs
    before = final
    print(f"job: builtin:digits, hidden {hidden}, {args.epochs}+{args.epochs} epochs "
          f"(measured on {args.measure_epochs}+{args.measure_epochs}, {wall:.0f} s), "
          f"keep {args.keep}")
    print(f"{'checkpoint group':<28} {'size each':>12} {'count':>7} {'total':>12}")
    for group, sizes in sorted(per_group.items()):
        count = len(sizes) * (scale if group.startswith("epoch") else 1)
        total = max(sizes) * count
        before += total
        print(f"{group:<28} {_mib(max(sizes)):>12} {count:>7.0f} {_mib(total):>12}")
    print(f"{'final model':<28} {_mib(final):>12} {1:>7} {_mib(final):>12}")
    # A new checkpoint is written before the older ones are pruned: keep + 1 at a moment.
    bound = (args.keep + 1) * max(max(s) for s in per_group.values()) + final
    print(f"before retention (kept forever):        {_mib(before)}")
    print(f"after retention, while running, at most: {_mib(bound)} "
          f"(measured peak {_mib(store.peak)})")
    print(f"after retention, once ended:            {_mib(left)} (final model only)")



if __name__ == "__main__":
    main()
