"""What the service adds to a job (target: at most 1.1x): a job's training time through the
service against the same spec trained by dr_core directly, in one command:

    .venv/bin/python -m bench.service_overhead [--modes embedded production] [--device cpu|cuda]
        [--repeats 3] [--no-write]

Through the service: a stack of bench/service_stack.py (the API as ``drtrain up`` starts it
and a Celery worker), embedded (SQLite, filesystem broker, local objects) or production
(PostgreSQL, Redis, local objects). The job is submitted
over HTTP; its time is ``finished_at - started_at`` as the API reports it (claim, data, the
training with its per-epoch checkpoints, metric points and progress, the model file, finish).
Directly: the same rows (``worker.data.prepare_data``'s seeded split of the same built-in),
the same dr_core configs (``worker.spec.build_pipeline_config``) and seed, ``run_pipeline``
in this process with the worker's thread count, timed around that call. The arms alternate;
figures are medians of ``--repeats``, after one untimed job that warms the worker.
All arms must end with the same accuracy (dr_core is deterministic): checked. The runner is
also run in-process, for its CPU time (stable on a shared machine, unlike wall time).

It rewrites the "Service overhead" section of docs/benchmarks.md, the one place that
figure is measured.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.benchmarks_doc import write_section
from bench.service_stack import Stack, open_stack, wait_until_quiet

BEGIN, END = "<!-- service-overhead:begin -->", "<!-- service-overhead:end -->"
TARGET = 1.1
# The CPU job the overhead target is stated for: digits, [256, 128], 10 + 10 pretraining
# epochs with Hellinger DR, 10 fine-tuning epochs.
SPEC: dict[str, Any] = {
    "dataset_id": "builtin:digits", "validation_fraction": 0.1,
    "model": {"hidden_layers": [256, 128]},
    "pretrain": {"epochs": 10, "dr": {"weight": 0.5, "divergence": "hellinger"}},
    "finetune": {"epochs": 10, "dr": None}, "seed": 0,
}


# The worker settings compared, named explicitly so the rows mean the same whatever the
# defaults: 0.1.0's (a checkpoint and a transaction every epoch), the checkpoint cadence alone,
# and the defaults since (a checkpoint every 10 epochs or 60 s, events gathered over 0.5 s).
CONFIGS: list[tuple[str, dict[str, float]]] = [
    ("checkpoint every epoch, a transaction per epoch (0.1.0's defaults)",
     {"checkpoint_every_epochs": 1, "checkpoint_every_seconds": 0.0, "record_every_seconds": 0.0}),
    ("checkpoint every 10 epochs or 60 s, a transaction per epoch",
     {"checkpoint_every_epochs": 10, "checkpoint_every_seconds": 60.0,
      "record_every_seconds": 0.0}),
    ("checkpoint every 10 epochs or 60 s, a transaction per 0.5 s (defaults)",
     {"checkpoint_every_epochs": 10, "checkpoint_every_seconds": 60.0,
      "record_every_seconds": 0.5}),
]
OPTIONS = ("checkpoint_every_epochs", "checkpoint_every_seconds", "record_every_seconds")


def _config_name(config: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in config.items())


def _wait(client: httpx.Client, url: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job['status']}: {job.get('status_reason')}")
            return job
        time.sleep(0.5)  # the times come from the job row: polling faster only loads the API
    raise TimeoutError(url)


def through_service(client: httpx.Client, api: str, spec: dict[str, Any]) -> tuple[float, dict]:
    """(started -> finished seconds, the job) of one job submitted over HTTP."""
    job = _wait(client, f"{api}/v1/jobs/{client.post(f'{api}/v1/jobs', json=spec).json()['id']}")
    parse = datetime.datetime.fromisoformat
    return (parse(job["finished_at"]) - parse(job["started_at"])).total_seconds(), job


def in_runner(stack: Stack, spec: dict[str, Any], config: dict[str, float]
              ) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds, CPU seconds of this process, the job's result) of one job run by
    ``worker.runner.run_job`` in this process (no broker, no HTTP; its threads included)."""
    from drtrain.jobs.spec import JobSpec, spec_to_dict
    from drtrain.kit.db import session_scope
    from drtrain.kit.models import Job, JobStatus, new_id, utcnow
    from drtrain.kit.settings import Settings
    from drtrain.kit.storage import make_store
    from worker.runner import run_job

    stored = spec_to_dict(JobSpec.model_validate(spec))
    # The stack's own settings (database, broker, store), as its worker has them.
    configured = {k.removeprefix("DRTRAIN_").lower(): v for k, v in stack.env.items()
                  if k.startswith("DRTRAIN_")}
    settings = Settings(**{**configured, **config})
    job_id = new_id()
    with session_scope(stack.factory) as s:
        # Dispatched, as a submit under the tenant's cap leaves it: a worker may claim it.
        s.add(Job(id=job_id, tenant_id=stack.tenant_id, dataset_id=stored["dataset_id"],
                  test_dataset_id=None, spec=stored, status=JobStatus.queued,
                  max_attempts=stored["max_attempts"] or 3, dispatched_at=utcnow()))
    wall, cpu = time.perf_counter(), time.process_time()
    run_job(job_id, settings=settings, sessionmaker=stack.factory, store=make_store(settings),
            worker_id="bench")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with stack.factory() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != JobStatus.succeeded:
            raise RuntimeError(f"in-process job ended {job and job.status}")
        return wall, cpu, dict(job.result)


def directly(spec: dict[str, Any], workdir: Path) -> tuple[float, float, dict[str, float]]:
    """(wall seconds, CPU seconds in run_pipeline, its metrics) for the spec on the worker's
    rows."""
    from dr_core.pipeline import run_pipeline
    from drtrain.jobs.spec import JobSpec, spec_to_dict
    from drtrain.kit.models import Job
    from drtrain.kit.settings import Settings
    from worker.data import prepare_data
    from worker.spec import build_pipeline_config

    parsed = JobSpec.model_validate(spec)
    job = Job(tenant_id="bench", dataset_id=parsed.dataset_id, test_dataset_id=None,
              spec=spec_to_dict(parsed))
    prepared = prepare_data(None, None, job, Settings(data_dir=str(workdir)), workdir)  # type: ignore[arg-type]
    cfg = build_pipeline_config(parsed, prepared.visible, len(prepared.split.y_train))
    device = spec.get("device", "cpu")
    generator = torch.Generator(device=device).manual_seed(parsed.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_pipeline(cfg, prepared.split, n_classes=len(prepared.classes),
                          visible=prepared.visible, generator=generator, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, result.metrics


def _accuracy(metrics: dict[str, Any]) -> float:
    """The test accuracy, or the validation accuracy where the data has no test split."""
    value = metrics.get("test_accuracy", metrics.get("val_accuracy"))
    return float("nan") if value is None else float(value)


def measure(stack: Stack, api: str, device: str, repeats: int,
            config: dict[str, float] | None = None) -> dict[str, Any]:
    """Alternating runs: through the stack (HTTP + Celery worker), through the runner in this
    process (on the stack's database and store), and directly; the medians and ratios, and whether all arms agree."""
    spec, config = {**SPEC, "device": device}, config or {}
    torch.set_num_threads(1)  # the stack's worker runs with OMP_NUM_THREADS=1
    runs: dict[str, list[float]] = {k: [] for k in
                                    ("stack", "runner", "runner_cpu", "direct", "direct_cpu")}
    accuracy: list[tuple[float, ...]] = []
    with httpx.Client(headers=stack.auth, timeout=30) as client, \
            tempfile.TemporaryDirectory() as tmp:
        through_service(client, api, {**spec, "seed": 99})  # warms the worker process
        in_runner(stack, {**spec, "seed": 99}, config)  # ... and this one
        for _ in range(repeats):
            wait_until_quiet()
            seconds, job = through_service(client, api, spec)
            wait_until_quiet()  # the stack's worker may still be finishing its job
            r_wall, r_cpu, r_result = in_runner(stack, spec, config)
            wait_until_quiet()
            d_wall, d_cpu, metrics = directly(spec, Path(tmp))
            for key, value in (("stack", seconds), ("runner", r_wall), ("runner_cpu", r_cpu),
                               ("direct", d_wall), ("direct_cpu", d_cpu)):
                runs[key].append(value)
            accuracy.append((_accuracy(job["result"]["metrics"]),
                             _accuracy(r_result["metrics"]), _accuracy(metrics)))
            print(f"stack {seconds:.2f} s | runner {r_wall:.2f} s ({r_cpu:.2f} s CPU) | "
                  f"dr_core {d_wall:.2f} s ({d_cpu:.2f} s CPU)", flush=True)

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(runs[a], runs[b])]

    per_run = {"ratio": ratios("stack", "direct"), "runner_ratio": ratios("runner", "direct"),
               "cpu_ratio": ratios("runner_cpu", "direct_cpu")}
    return {"stack": statistics.median(runs["stack"]), "runner": statistics.median(runs["runner"]),
            "direct": statistics.median(runs["direct"]),
            "runner_cpu": statistics.median(runs["runner_cpu"]),
            "direct_cpu": statistics.median(runs["direct_cpu"]),
            **{key: statistics.median(values) for key, values in per_run.items()},
            "range": {key: (min(values), max(values)) for key, values in per_run.items()},
            "same_accuracy": all(len(set(a)) == 1 for a in accuracy),
            "accuracy": accuracy[-1][0], "runs": runs}


def section(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    def met(r: float) -> str:
        return "met" if r <= TARGET else "NOT met"

    def spread(m: dict[str, Any], key: str) -> str:
        low, high = m["range"][key]
        return f"{m[key]:.2f}x ({low:.2f}-{high:.2f})"

    rows = "\n".join(
        f"| {dev} | {m['stack']:.2f} s | {m['runner']:.2f} s ({m['runner_cpu']:.2f} s CPU) | "
        f"{m['direct']:.2f} s ({m['direct_cpu']:.2f} s CPU) | {spread(m, 'ratio')}, {met(m['ratio'])} | "
        f"{spread(m, 'runner_ratio')}, {met(m['runner_ratio'])} | {spread(m, 'cpu_ratio')} | "
        f"{m['accuracy']:.4f} ({'same' if m['same_accuracy'] else 'DIFFERENT'}) |"
        for dev, m in results.items())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{BEGIN}
## Service overhead (`bench/service_overhead.py`)

Command: `.venv/bin/python -m bench.service_overhead {' '.join(sys.argv[1:])}`.
Date: {datetime.date.today().isoformat()}; torch {torch.__version__}; Python
{platform.python_version()}; {os.cpu_count()} CPUs shared with other processes.

The job: `builtin:digits`, hidden layers {SPEC['model']['hidden_layers']}, {SPEC['pretrain']['epochs']} + {SPEC['pretrain']['epochs']} pretraining epochs with
Hellinger DR (weight {SPEC['pretrain']['dr']['weight']}), {SPEC['finetune']['epochs']} fine-tuning epochs, batch sizes "auto", seed 0.
Three arms, alternating, median of {args.repeats} (ratios: medians of the per-run ratios, their
range in brackets); before
each arm the bench waits, up to 10 s, until the whole machine uses under a tenth of a core
(`bench.service_stack.wait_until_quiet`), so that no arm pays for what the previous one left
running:
- **stack**: submitted over HTTP to the stack (API + Celery worker; embedded: SQLite,
  filesystem broker, local objects; production: PostgreSQL, Redis, local objects; metric
  points and progress of every epoch, checkpoints and transactions at the cadence named in
  the row, all written by the background uploader); `finished_at - started_at` from the job
  row;
- **runner**: the same job run by `worker.runner.run_job` in the bench process (claim, data,
  training with the uploader thread, model file, finish; no broker, no HTTP), wall and CPU
  time of the process: the CPU ratio is the service's extra work, whatever else the machine
  is doing;
- **dr_core**: `run_pipeline` on the same rows and configs in the same process, one thread
  like the worker.
The accuracy of every arm must be the same (same seed, deterministic on CPU).

| mode, device, settings | stack | runner | dr_core directly | stack / dr_core | runner / dr_core | CPU: runner / dr_core | test (else validation) accuracy |
|---|---|---|---|---|---|---|---|
{rows}

Target <= {TARGET}x. Load average at the end: {load}. The same code has given ratios tens of
percent apart on days when other work shared this VM's 2 cores: compare the ranges. Each
stored checkpoint costs the worker several ms of CPU (serialise, sha256, fsync, upload, fenced
rows and retention), taken from training on a busy 2-core machine even off the training
thread, so the default stores one every 10 epochs or 60 s (second row;
`DRTRAIN_CHECKPOINT_EVERY_EPOCHS`, `DRTRAIN_CHECKPOINT_EVERY_SECONDS`). The
CUDA rows need a GPU worker: `--device cuda` (or `all`).
{END}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["embedded", "production"],
                        choices=["embedded", "production"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    parser.add_argument("--repeats", type=int, default=3)
    for option in OPTIONS:
        parser.add_argument(f"--{option.replace('_', '-')}", type=float, default=None,
                            help=f"DRTRAIN_{option.upper()} for the service arms")
    parser.add_argument("--no-write", action="store_true", help="print only, leave the docs alone")
    args = parser.parse_args()
    chosen = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    configs = [(_config_name(chosen), chosen)] if chosen else CONFIGS
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    results = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="drtrain-overhead-") as tmp, \
                open_stack(mode, Path(tmp)) as stack:
            api = stack.start_api()
            for name, config in configs:
                stack.stop("worker")
                stack.env.update({f"DRTRAIN_{k.upper()}": f"{v:g}" for k, v in config.items()})
                stack.start_worker()
                for device in devices:
                    results[f"{mode}, {device}, {name}"] = measure(stack, api, device,
                                                                   args.repeats, config)
    text = section(results, args)
    if not args.no_write:
        write_section(text, BEGIN, END)
    print(text)


if __name__ == "__main__":
    main()
