"""From what bench/scale.py measured with a few workers to a cluster of many: plain
arithmetic, each figure with its basis (per-worker rates x workers, per-job costs x jobs)."""
from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Measured:
    workers: int
    jobs_per_s_per_worker: float  # back to back, from every worker ready to the last job ended
    pg_xacts_per_job: float  # the workers' side: claim to finish, the reaper's share included
    pg_xacts_per_submit: float  # the API's side
    redis_per_job: float
    redis_per_submit: float
    redis_idle_per_worker_s: float  # a worker waiting for work (its broker polling)
    reaper_pg_xacts_per_s: float  # the one elected reaper, on an idle cluster
    connections_per_worker: float  # the workers' most at once (the reaper's apart) / workers
    connections_api: int  # the API process's most at once (its pool and its LISTEN)
    heartbeat_seconds: float  # a running job's lease renewal: one transaction each


@dataclass(frozen=True)
class Projection:
    workers: int
    jobs_per_day: int
    peak_jobs_per_s: float
    peak_pg_xacts_per_s: float
    peak_redis_per_s: float
    day_pg_xacts_per_s: float
    day_redis_per_s: float
    connections: float

    @property
    def day_jobs_per_s(self) -> float:
        return self.jobs_per_day / SECONDS_PER_DAY


def project(m: Measured, workers: int = 100, jobs_per_day: int = 10_000,
            api_processes: int = 1) -> Projection:
    """Peak: every worker ends a job and takes the next as fast as measured here, and the
    jobs are submitted as fast: per-worker rates x ``workers``. A day: ``jobs_per_day`` spread
    evenly (per-job costs x jobs/s), every worker busy all day (one heartbeat transaction per
    ``heartbeat_seconds`` each) and the reaper's idle rounds; Redis counts each worker at its
    idle polling rate, the most a waiting worker sends."""
    peak_jobs = m.jobs_per_s_per_worker * workers
    day_jobs = jobs_per_day / SECONDS_PER_DAY
    return Projection(
        workers=workers, jobs_per_day=jobs_per_day,
        peak_jobs_per_s=peak_jobs,
        peak_pg_xacts_per_s=peak_jobs * (m.pg_xacts_per_job + m.pg_xacts_per_submit),
        peak_redis_per_s=peak_jobs * (m.redis_per_job + m.redis_per_submit),
        day_pg_xacts_per_s=(day_jobs * (m.pg_xacts_per_job + m.pg_xacts_per_submit)
                            + workers / m.heartbeat_seconds + m.reaper_pg_xacts_per_s),
        day_redis_per_s=(day_jobs * (m.redis_per_job + m.redis_per_submit)
                         + workers * m.redis_idle_per_worker_s),
        # + 1: the elected reaper's connection, for the length of its round
        connections=m.connections_per_worker * workers + 1 + m.connections_api * api_processes)
