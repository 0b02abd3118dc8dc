"""``run_pipeline`` with what the service puts around it: a slot on a shared GPU
(``worker.packing``), the background recorder of checkpoints, metrics and progress
(``worker.uploader``), and each epoch's system metrics (``worker.system_metrics``). The
runner claims, prepares and finishes; this trains."""
from __future__ import annotations

from typing import Any

import torch

from dr_core.config import PipelineConfig
from dr_core.events import TrainingStopped
from dr_core.pipeline import PipelineResult, run_pipeline
from drtrain.jobs.spec import JobSpec
from drtrain.kit.settings import Settings
from worker.data import Prepared
from worker.job_log import EpochLines
from worker.packing import device_slot, estimate_bytes
from worker.system_metrics import SystemSampler, WithSystemMetrics
from worker.uploader import BackgroundRecorder, CheckpointCadence, Recorder


def train(cfg: PipelineConfig, prepared: Prepared, *, spec: JobSpec, settings: Settings,
          device: str, generator: torch.Generator, callback: Recorder,
          resume: dict[str, Any] | None) -> PipelineResult:
    """Train ``cfg`` on the prepared rows; raises TrainingStopped when asked to stop while
    waiting for the device. Leaving returns only once every event is recorded."""
    split = prepared.split
    n_eval = sum(len(a) for a in (split.X_val, split.X_test) if a is not None)
    need = estimate_bytes(spec, len(split.X_train), split.X_train.shape[1],
                          len(prepared.classes), n_eval)
    cadence = CheckpointCadence(settings.checkpoint_every_epochs, settings.checkpoint_every_seconds,
                                layer_epochs=[layer.epochs for layer in cfg.pretrain or ()])
    with device_slot(settings.data_dir, device, need, settings.jobs_per_device,
                     callback.should_stop) as admitted:
        if not admitted:
            raise TrainingStopped("stopped while waiting for device memory")
        with BackgroundRecorder(callback, max_pending=settings.upload_queue_events,
                                cadence=cadence,
                                flush_seconds=settings.record_every_seconds) as recorder:
            measured = WithSystemMetrics(EpochLines(recorder), SystemSampler(device))
            return run_pipeline(cfg, split, n_classes=len(prepared.classes),
                                visible=prepared.visible, generator=generator, device=device,
                                callback=measured, resume=resume,
                                cuda_graphs=settings.cuda_graphs)
