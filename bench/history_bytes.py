"""Bytes of metric history per ended job on PostgreSQL, before and after the reaper's
downsampling (``drtrain.jobs.history``), with the default settings.

Jobs of two shapes, each with the points a worker writes (dr_core/events.py's metric names;
fine-tuning adds a gradient norm, and one of its DR term, per hidden layer and the head):
the default JobSpec (2 hidden layers, 5 pre-training epochs a layer, 20 fine-tuning epochs)
and a long one (100 a layer, 500). Bytes are ``pg_total_relation_size('metric_points')``
(rows and indexes) after ``VACUUM FULL``, divided by the jobs.

    .venv/bin/python -m bench.history_bytes [--jobs 200]
"""
from __future__ import annotations

import argparse
import math
import uuid

from sqlalchemy import Engine, insert, text

from bench.service_stack import scratch_database
from dr_core.events import FINETUNE_METRICS, GRAD_NORM, GRAD_NORM_DR, PRETRAIN_METRICS
from drtrain.jobs import history
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.models import Job, MetricPoint, Tenant, utcnow
from drtrain.kit.settings import Settings

SHAPES = {"default job": (2, 5, 20), "long job": (2, 100, 500)}


def _rows(job_id: str, layers: int, pre: int, fine: int) -> list[dict]:
    curves = [("pretrain", layer, name, pre) for layer in range(layers)
              for name in PRETRAIN_METRICS]
    grads = [f"layer{i}" for i in range(layers)] + ["head"]
    fine_names = [*FINETUNE_METRICS, *(GRAD_NORM + g for g in grads),
                  *(GRAD_NORM_DR + g for g in grads)]
    curves += [("finetune", -1, name, fine) for name in fine_names]
    rows, seq, at = [], 0, utcnow()
    for phase, layer, name, epochs in curves:
        for epoch in range(1, epochs + 1):
            seq += 1
            rows.append(dict(job_id=job_id, seq=seq, attempt=1, phase=phase,
                             layer=None if layer < 0 else layer, layer_key=layer, epoch=epoch,
                             name=name, value=math.exp(-epoch / 30) + 0.01 * math.sin(seq),
                             at=at))
    return rows


def _bytes(engine: Engine) -> int:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM FULL metric_points"))
        return int(conn.execute(text("SELECT pg_total_relation_size('metric_points')"))
                   .scalar_one())


def measure(engine: Engine, jobs: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        s.execute(text("DELETE FROM jobs"))
        tenant = Tenant(name=f"history-{uuid.uuid4().hex[:8]}")
        s.add(tenant)
        s.flush()
        for _ in range(jobs):
            job = Job(tenant_id=tenant.id, dataset_id="builtin:digits", spec={},
                      status="succeeded", finished_at=utcnow())
            s.add(job)
            s.flush()
            s.execute(insert(MetricPoint), _rows(job.id, *shape))
    rows = sum(1 for _ in _rows("x", *shape))
    before = _bytes(engine)
    settings = Settings(environment="test", metric_history_full_days=0)
    with session_scope(factory) as s:
        history.downsample_due(s, settings, utcnow(), limit=jobs)
    after = _bytes(engine)
    return rows, before // jobs, after // jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with scratch_database("history") as url:
        engine = make_engine(url)
        for label, shape in SHAPES.items():
            rows, before, after = measure(engine, args.jobs, shape)
            print(f"{label} ({rows} points): {before:,} bytes of metric history per ended job "
                  f"before downsampling, {after:,} after (defaults)")
        engine.dispose()


if __name__ == "__main__":
    main()
