"""The dr_core callback of a running job: checkpoint, metrics and progress, all fenced.

Each event is recorded in one transaction (checkpoint row + metric points + progress), after
its state is safely in the store, so SQL never points at a checkpoint that is not there. The
same transaction prunes the job's resumable checkpoints to the newest ``keep_checkpoints``
(their objects are deleted once it has committed).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dr_core.events import Event
from drtrain.jobs import lifecycle, retention
from drtrain.jobs.lifecycle import MetricValue
from drtrain.kit.cancel_signal import CancelWatch, NoWatch
from drtrain.kit.db import session_scope
from drtrain.kit.storage import ObjectStore, remove_after_commit
from worker.checkpoints import checkpoint_key, upload_state
from worker.heartbeat import Heartbeat, StopReason

log = logging.getLogger(__name__)


class JobCallback:
    def __init__(self, *, job_id: str, attempt: int, worker_id: str,
                 factory: sessionmaker[Session], store: ObjectStore, heartbeat: Heartbeat,
                 workdir: Path, keep_checkpoints: int = 2,
                 cancel: CancelWatch | None = None) -> None:
        self.job_id, self.attempt, self.worker_id = job_id, attempt, worker_id
        self.factory, self.store, self.hb, self.workdir = factory, store, heartbeat, workdir
        self.keep = keep_checkpoints
        self.cancel = cancel or NoWatch()

    def on_epoch_end(self, event: Event) -> None:
        self._record(event, "epoch")

    def on_layer_end(self, event: Event) -> None:
        self._record(event, "layer")

    def should_stop(self) -> bool:
        """Asked after every batch: the direct cancel signal (``drtrain.kit.cancel_signal``),
        then whatever the heartbeat learnt from SQL."""
        if self.cancel.requested():
            self.hb.request_stop(StopReason.cancel)
        return self.hb.should_stop()

    def _record(self, event: Event, kind: str) -> None:
        if self.hb.stop_reason is StopReason.fenced:
            return
        uploaded = None
        if event.state is not None:
            key = checkpoint_key(self.job_id, self.attempt, kind, event.phase, event.layer,
                                 event.epoch)
            uploaded = upload_state(self.store, key, event.state)
        fenced = False
        with session_scope(self.factory) as s:
            if uploaded is not None:
                fenced |= lifecycle.add_checkpoint(
                    s, self.job_id, self.attempt, kind=kind, phase=event.phase, layer=event.layer,
                    epoch=event.epoch, object_key=uploaded.key, sha256=uploaded.sha256,
                    size_bytes=uploaded.size_bytes, worker_id=self.worker_id) is None
                if not fenced:
                    # Under the same fenced row lock: a stale attempt can never prune.
                    remove_after_commit(
                        s, self.store, retention.prune_resumable(s, self.job_id, self.keep))
            if kind == "epoch" and not fenced:
                log.info("%s%s epoch %d: %s", event.phase,
                         "" if event.layer is None else f" layer {event.layer}", event.epoch,
                         " ".join(f"{k}={v:.4g}" for k, v in event.metrics.items()))
                # NaN/inf cannot travel as JSON; a diverged run shows up in its final status.
                points = [MetricValue(event.phase, event.layer, event.epoch, name, float(value))
                          for name, value in event.metrics.items() if math.isfinite(value)]
                fenced |= lifecycle.add_metrics(s, self.job_id, self.attempt, points,
                                                worker_id=self.worker_id) is None
            if not fenced:
                fenced |= not lifecycle.report_progress(
                    s, self.job_id, self.attempt, event.phase, event.layer, event.epoch,
                    event.progress, worker_id=self.worker_id)
        if fenced:
            self.hb.request_stop(StopReason.fenced)
