"""The recorder of a running job's events (``worker.uploader.Recorder``, behind the
background recorder that dr_core calls): checkpoint, metrics and progress, all fenced.

Events are recorded in one transaction per call of ``record`` (checkpoint rows + metric
points + progress), after their states are safely in the store, so SQL never points at a
checkpoint that is not there. The same transaction prunes the job's resumable checkpoints to
the newest ``keep_checkpoints`` (their objects are deleted once it has committed).
"""
from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dr_core.events import Event
from drtrain.jobs import lifecycle, retention
from drtrain.jobs.lifecycle import MetricValue
from drtrain.kit.cancel_signal import CancelWatch, NoWatch
from drtrain.kit.db import session_scope
from drtrain.kit.storage import ObjectStore, remove_after_commit
from worker.checkpoints import Uploaded, checkpoint_key, upload_state
from worker.heartbeat import Heartbeat, StopReason
from worker.uploader import Item


class JobCallback:
    def __init__(self, *, job_id: str, attempt: int, worker_id: str,
                 factory: sessionmaker[Session], store: ObjectStore, heartbeat: Heartbeat,
                 workdir: Path, keep_checkpoints: int = 2,
                 cancel: CancelWatch | None = None) -> None:
        self.job_id, self.attempt, self.worker_id = job_id, attempt, worker_id
        self.factory, self.store, self.hb, self.workdir = factory, store, heartbeat, workdir
        self.keep = keep_checkpoints
        self.cancel = cancel or NoWatch()

    def should_stop(self) -> bool:
        """Asked after every batch: the direct cancel signal (``drtrain.kit.cancel_signal``),
        then whatever the heartbeat learnt from SQL."""
        if self.cancel.requested():
            self.hb.request_stop(StopReason.cancel)
        return self.hb.should_stop()

    def record(self, items: list[Item]) -> None:
        """Record events (kind "epoch" or "layer", in order) in one fenced transaction, their
        states uploaded first; a fenced-out attempt records nothing more."""
        if self.hb.stop_reason is StopReason.fenced:
            return
        uploads: list[tuple[str, Event, Uploaded] | None] = []
        try:
            for kind, event in items:
                uploads.append(self._upload(kind, event))
        except Exception:
            # The events before the one that failed are in the store: their rows still go
            # in, so that the next attempt resumes from them.
            self._commit(items[:len(uploads)], uploads)
            raise
        self._commit(items, uploads)

    def _commit(self, items: list[Item],
                uploads: list[tuple[str, Event, Uploaded] | None]) -> None:
        if not items:
            return
        with session_scope(self.factory) as s:
            fenced = not self._write(s, items, [u for u in uploads if u is not None])
        if fenced:
            self.hb.request_stop(StopReason.fenced)

    def _upload(self, kind: str, event: Event) -> tuple[str, Event, Uploaded] | None:
        if event.state is None:
            return None
        key = checkpoint_key(self.job_id, self.attempt, kind, event.phase, event.layer,
                             event.epoch)
        return kind, event, upload_state(self.store, key, event.state)

    def _write(self, s: Session, items: list[Item],
               uploads: list[tuple[str, Event, Uploaded]]) -> bool:
        """The rows of ``items``: False when this attempt is fenced out."""
        for kind, event, uploaded in uploads:
            if lifecycle.add_checkpoint(
                    s, self.job_id, self.attempt, kind=kind, phase=event.phase,
                    layer=event.layer, epoch=event.epoch, object_key=uploaded.key,
                    sha256=uploaded.sha256, size_bytes=uploaded.size_bytes,
                    worker_id=self.worker_id) is None:
                return False
        if uploads:
            # Under the same fenced row lock: a stale attempt can never prune.
            remove_after_commit(s, self.store, retention.prune_resumable(s, self.job_id, self.keep))
        points = [point for kind, event in items if kind == "epoch"
                  for point in self._epoch_points(event)]
        if points and lifecycle.add_metrics(s, self.job_id, self.attempt, points,
                                            worker_id=self.worker_id) is None:
            return False
        last = items[-1][1]
        return lifecycle.report_progress(s, self.job_id, self.attempt, last.phase, last.layer,
                                         last.epoch, last.progress, worker_id=self.worker_id)

    @staticmethod
    def _epoch_points(event: Event) -> list[MetricValue]:
        # NaN/inf cannot travel as JSON; a diverged run shows up in its final status.
        ended = datetime.fromtimestamp(event.at, UTC)
        return [MetricValue(event.phase, event.layer, event.epoch, name, float(value), ended)
                for name, value in event.metrics.items() if math.isfinite(value)]
