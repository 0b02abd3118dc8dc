"""Job logic: what a submit checks and adds (``submit_batch`` decides the outcome), cancel,
the final model, predict.

Every status change here is a conditional UPDATE on the status it expects, so a worker
moving the same job concurrently can never be overwritten (the loser sees rowcount 0).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from drtrain.datasets import builtins
from drtrain.datasets import repository as datasets_repo
from drtrain.jobs import lifecycle, queue
from drtrain.jobs import repository as q
from drtrain.jobs.predict import ModelFormatError, model_cache
from drtrain.jobs.spec import MAX_PARAMETERS, JobSpec, resolve_batch_size, spec_to_dict
from drtrain.jobs.warnings import training_warnings, validation_rows
from drtrain.kit import cancel_signal
from drtrain.kit.db import after_commit
from drtrain.kit.errors import Conflict, Invalid, NotFound
from drtrain.kit.models import Checkpoint, DatasetStatus, Job, JobStatus, JobTag, new_id, utcnow
from drtrain.kit.publishing import publish_jobs
from drtrain.kit.settings import Settings
from drtrain.tenants import quota

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30


def request_hash(spec_dict: dict[str, Any]) -> str:
    canonical = json.dumps(spec_dict, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class DatasetFacts:
    n_features: int
    n_classes: int
    feature_range: tuple[float, float]
    n_samples: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    # Groups DR pairs across: the classes unless a side-information column names others.
    n_groups: int | None = None
    # Rows with a label (fine-tuning uses these) and with a side value (DR pairs these).
    n_labelled: int | None = None
    n_with_side: int | None = None

    def held_out(self, spec: JobSpec) -> int:
        """The rows the worker holds out for validation (drtrain.jobs.validation_split)."""
        labelled = self.n_samples if self.n_labelled is None else self.n_labelled
        return validation_rows(labelled, self.n_samples, spec.validation_fraction)

    def warnings_for(self, spec: JobSpec) -> list[str]:
        return training_warnings(spec, n_rows=self.n_samples, n_val=self.held_out(spec),
                                 class_counts=self.class_counts, n_groups=self.n_groups,
                                 n_labelled=self.n_labelled, n_with_side=self.n_with_side)


def dataset_facts(session: Session, settings: Settings, tenant_id: str,
                  dataset_id: str) -> DatasetFacts | None:
    """What a spec must agree with; None when the tenant cannot use that dataset."""
    if dataset_id.startswith("builtin:"):
        from drtrain.datasets.builtins import builtin_facts  # reads files: only when a builtin is named

        summary = builtin_facts(dataset_id, settings)
        if summary is None:
            return None
        lo, hi = summary.feature_range
        return DatasetFacts(summary.n_features, summary.n_classes, (float(lo), float(hi)),
                            summary.n_samples, dict(summary.class_counts),
                            summary.n_groups or summary.n_classes, summary.n_labelled,
                            summary.n_with_side)
    ds = datasets_repo.get_dataset(session, tenant_id, dataset_id)
    if ds is None:
        return None
    if ds.status == DatasetStatus.validating:
        raise Conflict(f"dataset {dataset_id!r} is still being checked (status validating); "
                       "submit once GET /v1/datasets/{id} says ready",
                       headers={"Retry-After": "2"})
    if (ds.status != DatasetStatus.ready or ds.n_features is None or ds.n_classes is None
            or ds.n_samples is None or ds.feature_range is None):
        raise Invalid(f"dataset {dataset_id!r} failed its check and cannot be used: "
                      f"{ds.status_reason}")
    lo, hi = ds.feature_range
    # Datasets checked before the counts existed carried a label and a side value on every row.
    return DatasetFacts(ds.n_features, ds.n_classes, (float(lo), float(hi)), ds.n_samples,
                        dict(ds.class_counts or {}),
                        None if ds.side_info_column else ds.n_classes,
                        ds.n_samples if ds.n_labelled is None else ds.n_labelled,
                        ds.n_samples if ds.n_with_side is None else ds.n_with_side)


def _invalid(loc: list[str | int], msg: str) -> Invalid:
    return Invalid(f"{'.'.join(map(str, loc))}: {msg}",
                   errors=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


FactsSeen = dict[tuple[str, str], DatasetFacts | None]


def deleted_datasets(session: Session, tenant_id: str, specs: list[JobSpec]) -> set[str]:
    """Of the uploaded datasets ``specs`` name, those deleted since they were checked. Call
    it holding the tenant's lock (a dataset delete takes it too): a dataset found here stays
    until the commit."""
    named = {name for spec in specs for name in (spec.dataset_id, spec.test_dataset_id)
             if name is not None and not name.startswith(builtins.PREFIX)}
    return named - datasets_repo.existing_ids(session, tenant_id, named) if named else set()


def check_not_deleted(spec: JobSpec, deleted: set[str], loc: tuple[str | int, ...] = ()) -> None:
    """The 422 ``check_against_dataset`` answers for a missing dataset, for one deleted since."""
    for field_name in ("dataset_id", "test_dataset_id"):
        name = getattr(spec, field_name)
        if name in deleted:
            raise _invalid([*loc, field_name], f"dataset {name!r} does not exist")


def _facts(session: Session, settings: Settings, tenant_id: str, dataset_id: str,
           seen: FactsSeen | None) -> DatasetFacts | None:
    if seen is None:
        return dataset_facts(session, settings, tenant_id, dataset_id)
    key = (tenant_id, dataset_id)
    if key not in seen:
        seen[key] = dataset_facts(session, settings, tenant_id, dataset_id)
    return seen[key]


def check_against_dataset(session: Session, settings: Settings, tenant_id: str,
                          spec: JobSpec, loc: tuple[str | int, ...] = (), *,
                          seen: FactsSeen | None = None) -> DatasetFacts:
    """The checks a spec's schema cannot make alone (it needs the dataset): 422 each.
    Returns the training set's facts (for the job's warnings). ``seen``: the facts already
    read in this transaction, by (tenant, dataset), added to as they are read."""
    facts = _facts(session, settings, tenant_id, spec.dataset_id, seen)
    if facts is None:
        raise _invalid([*loc, "dataset_id"], f"dataset {spec.dataset_id!r} does not exist")
    if spec.test_dataset_id is not None:
        test = _facts(session, settings, tenant_id, spec.test_dataset_id, seen)
        if test is None:
            raise _invalid([*loc, "test_dataset_id"],
                           f"dataset {spec.test_dataset_id!r} does not exist")
        if test.n_features != facts.n_features:
            raise _invalid([*loc, "test_dataset_id"],
                           f"has {test.n_features} features, the training set {facts.n_features}")
        _check_test_classes(test, facts, [*loc, "test_dataset_id"])
    _check_rows_used(spec, facts, loc)
    _check_side_rows(spec, facts, loc)
    lo, hi = facts.feature_range
    if spec.model.visible_units == "bernoulli" and (lo < 0.0 or hi > 1.0):
        raise _invalid([*loc, "model", "visible_units"],
                       "bernoulli visible units need data in [0, 1]; this dataset spans "
                       f"[{lo:.7g}, {hi:.7g}]")  # float32: seven digits, not 0.100000001490...
    n_params = spec.parameter_count(facts.n_features, facts.n_classes)
    if n_params > MAX_PARAMETERS:
        raise _invalid([*loc, "model", "hidden_layers"],
                       f"{n_params} parameters for {facts.n_features} features exceeds {MAX_PARAMETERS}")
    return facts


def _check_test_classes(test: DatasetFacts, train: DatasetFacts, loc: list[str | int]) -> None:
    """Every class of the test set must be one the model learns (datasets checked before
    class counts were kept have none: the worker checks those)."""
    if not test.class_counts or not train.class_counts:
        return
    missing = sorted(set(test.class_counts) - set(train.class_counts))
    if missing:
        known = sorted(train.class_counts)
        raise _invalid(loc, f"classes {missing[:5]} do not occur in the training set, whose "
                            f"classes are {known[:10]}{' ...' if len(known) > 10 else ''} "
                            "(labels are compared as text: 3 and 3.0 are two classes)")


def _check_side_rows(spec: JobSpec, facts: DatasetFacts, loc: tuple[str | int, ...]) -> None:
    """Side rows must be below the batch size: the schema checks an explicit one; "auto"
    is known only with the dataset's training rows (the worker resolves it the same way)."""
    pre = spec.pretrain
    if pre is None or not pre.side_rows_per_batch or pre.batch_size != "auto":
        return
    n_train = facts.n_samples - facts.held_out(spec)
    batch = resolve_batch_size("auto", n_train)
    if pre.side_rows_per_batch >= batch:
        raise _invalid([*loc, "pretrain", "side_rows_per_batch"],
                       f"({pre.side_rows_per_batch}) must be below the batch size: batch_size "
                       f"\"auto\" is {batch} for this dataset's {n_train} training rows; "
                       "lower it, or set pretrain.batch_size")


def _check_rows_used(spec: JobSpec, facts: DatasetFacts, loc: tuple[str | int, ...]) -> None:
    """Fine-tuning needs labelled rows and DR rows with a side value: a dataset with none is
    a 422 naming the field that asks for them."""
    if spec.finetune is not None and facts.n_labelled == 0:
        raise _invalid([*loc, "finetune"],
                       f"dataset {spec.dataset_id!r} has no labelled rows ({facts.n_samples} "
                       "rows, every label missing): fine-tuning trains on labelled rows only; "
                       "set finetune to null to pretrain only")
    if facts.n_with_side != 0:
        return
    for phase, section in (("pretrain", spec.pretrain), ("finetune", spec.finetune)):
        dr = section.dr if section is not None else None
        if dr is not None and dr.weight > 0:
            raise _invalid([*loc, phase, "dr"],
                           f"DR is on but dataset {spec.dataset_id!r} has no rows with a side "
                           "value (no label and no side information on any row): DR pairs only "
                           "rows that carry one; set dr to null or use a dataset with side "
                           "information")


def with_server_defaults(spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec with the fields whose default is the server's setting filled in."""
    if spec.max_attempts is None:
        return spec.model_copy(update={"max_attempts": settings.max_attempts})
    return spec


def job_row(settings: Settings, tenant_id: str, spec: JobSpec, *,
            idempotency_key: str | None = None, sweep_id: str | None = None,
            grid_point: dict[str, Any] | None = None,
            facts: DatasetFacts | None = None, dispatched: bool = True) -> dict[str, Any]:
    """Every column of a new queued job: the one definition behind ``new_job`` (the ORM) and
    a submit batch's insert. ``facts`` (from check_against_dataset) give the submit-time
    warnings; ``dispatched``: it takes a running slot now, else it waits in its tenant's
    queue (``drtrain.jobs.queue``)."""
    spec = with_server_defaults(spec, settings)
    spec_dict = spec_to_dict(spec)
    now = utcnow()
    return {"id": new_id(), "tenant_id": tenant_id, "dataset_id": spec.dataset_id,
            "test_dataset_id": spec.test_dataset_id, "sweep_id": sweep_id,
            "grid_point": grid_point, "spec": spec_dict, "idempotency_key": idempotency_key,
            "request_hash": request_hash(spec_dict), "status": JobStatus.queued,
            "dispatched_at": now if dispatched else None,
            "progress": 0.0, "attempt": 1, "max_attempts": spec.max_attempts,
            "cancel_requested": False, "created_at": now, "updated_at": now,
            "name": spec.name, "tags": list(spec.tags),
            "warnings": facts.warnings_for(spec) if facts is not None else []}


def answer_view(row: dict[str, Any]) -> dict[str, Any]:
    """A new job's row (``job_row``) as ``Job(**row)`` reads before its first refresh, every
    column it does not set None: what a submit answers from, without building ORM objects
    nobody adds to a session."""
    return {**_UNSET_COLUMNS, **row}


_UNSET_COLUMNS: dict[str, Any] = dict.fromkeys(column.key for column in Job.__table__.columns)


def new_job(session: Session, settings: Settings, tenant_id: str, spec: JobSpec, *,
            idempotency_key: str | None = None, sweep_id: str | None = None,
            grid_point: dict[str, Any] | None = None,
            facts: DatasetFacts | None = None, dispatched: bool = True) -> Job:
    """Add a queued job; a dispatched one has its message scheduled for after the commit
    that makes it durable (a waiting one is published when it is given a slot)."""
    job = Job(**job_row(settings, tenant_id, spec, idempotency_key=idempotency_key,
                        sweep_id=sweep_id, grid_point=grid_point, facts=facts,
                        dispatched=dispatched))
    session.add(job)
    session.add_all(JobTag(job=job, tag=tag) for tag in dict.fromkeys(spec.tags))
    if dispatched:
        after_commit(session, lambda: publish_jobs(settings, [job.id]))
    return job


def locked_slots(session: Session, settings: Settings, tenant_id: str) -> queue.Slots:
    """Takes the tenant's submit lock (held until the transaction ends), checks the storage
    quota (429) and returns the tenant's dispatched and waiting jobs, those this transaction
    added included. The submit's caller commits right after: the lock covers one read and the
    commit, never the work before them."""
    slots = queue.locked_slots(session, tenant_id)
    quota.check_used(settings, slots.stored)
    return slots


class AlreadyEnded(Conflict):
    """A cancel of a job that has succeeded or failed: there is nothing to cancel."""


def cancel_job(session: Session, settings: Settings, tenant_id: str,
               job_id: str) -> tuple[Job, bool]:
    """queued -> cancelled now; running -> cancelling (the worker stops within a batch);
    cancelling -> no-op; cancelled -> no-op (a repeated cancel is idempotent); succeeded or
    failed -> 409. Returns (job, already_cancelled). One retry if the worker moved the job
    meanwhile. A job now cancelling is signalled to its training loop once the row is
    committed (the heartbeat is the fallback)."""
    job, already = _cancel(session, tenant_id, job_id)
    _after_cancels(session, settings, tenant_id, [(job, already)])
    return job, already


def cancel_active(session: Session, settings: Settings, tenant_id: str,
                  job_ids: list[str]) -> int:
    """``cancel_job`` for each of the tenant's jobs ``job_ids`` that has not ended (one that
    ends meanwhile is left as it is), with the freed slots handed on once, after all of them:
    none goes to a job about to be cancelled. Returns how many of them are now cancelling or
    newly cancelled."""
    done: list[tuple[Job, bool]] = []
    for job_id in job_ids:
        try:
            done.append(_cancel(session, tenant_id, job_id))
        except AlreadyEnded:
            continue
    _after_cancels(session, settings, tenant_id, done)
    return sum(1 for job, already in done if not already)


def _after_cancels(session: Session, settings: Settings, tenant_id: str,
                   done: list[tuple[Job, bool]]) -> None:
    """After ``_cancel``s: each job now cancelling is signalled to its training loop once the
    rows are committed; the slots of dispatched jobs cancelled while queued are handed on."""
    stopping = [job.id for job, _ in done if job.status == JobStatus.cancelling]

    def signal() -> None:
        for job_id in stopping:
            cancel_signal.send(settings, job_id)  # never raises

    if stopping:
        after_commit(session, signal)
    if any(not already and job.status == JobStatus.cancelled and job.dispatched_at is not None
           for job, already in done):
        queue.pass_on_slots(session, settings, tenant_id)


def _cancel(session: Session, tenant_id: str, job_id: str) -> tuple[Job, bool]:
    for _ in range(2):
        job = q.get_job(session, tenant_id, job_id, fresh=True)
        status = JobStatus(job.status)
        if status is JobStatus.cancelling:
            return job, False
        if status is JobStatus.cancelled:
            return job, True
        if status.terminal:
            raise AlreadyEnded(f"job {job_id} has already {status.value}: there is nothing to "
                               "cancel")
        if status is JobStatus.queued:
            moved = lifecycle.transition(session, job_id, "queued", status=JobStatus.cancelled.value,
                                finished_at=lifecycle.utcnow(), status_reason="cancelled by user",
                                cancel_requested=True)
        else:
            moved = lifecycle.transition(session, job_id, "running", status=JobStatus.cancelling.value,
                                cancel_requested=True)
        if moved:
            return q.get_job(session, tenant_id, job_id, fresh=True), False
    raise Conflict(f"job {job_id} changed state concurrently; try again")


def final_model(session: Session, tenant_id: str, job_id: str) -> Checkpoint:
    """The job's final checkpoint row; 409 while the job has not succeeded."""
    job = q.get_job(session, tenant_id, job_id)
    if job.status != JobStatus.succeeded:
        raise Conflict(f"job {job_id} is {job.status}; the model exists once it has succeeded")
    ck = q.final_checkpoint(session, job_id)
    if ck is None:
        raise NotFound(f"job {job_id} has no final model")
    return ck


def checkpoints(session: Session, tenant_id: str, job_id: str) -> list[Checkpoint]:
    """The checkpoints of the tenant's job, oldest first; 404 for any other job."""
    q.get_job(session, tenant_id, job_id)
    return q.checkpoints(session, job_id)


def checkpoint(session: Session, tenant_id: str, job_id: str, checkpoint_id: str) -> Checkpoint:
    """One checkpoint row of the tenant's job; 404 for any other."""
    q.get_job(session, tenant_id, job_id)
    ck = q.checkpoint(session, job_id, checkpoint_id)
    if ck is None:
        raise NotFound(f"job {job_id} has no checkpoint {checkpoint_id}")
    return ck


def read_object(store: Any, key: str, size: int) -> bytes:
    return b"".join(store.iter_range(key, 0, size - 1)) if size else b""


def predict(session: Session, store: Any, tenant_id: str, job_id: str,
            inputs: list[list[float]]) -> tuple[list[str], list[list[float]], list[str]]:
    """(each row's predicted class, each row's probabilities, the classes in the order of
    the probabilities)."""
    ck = final_model(session, tenant_id, job_id)
    try:
        model = model_cache.get(ck.sha256, lambda: read_object(store, ck.object_key, ck.size_bytes),
                                key=ck.object_key)
    except ModelFormatError as exc:
        raise Conflict(f"cannot predict with this model: {exc}") from exc
    widths = {len(row) for row in inputs}
    if widths != {model.n_features}:
        raise Invalid(f"every input row needs {model.n_features} values, got widths {sorted(widths)}",
                      errors=[{"loc": ["body", "inputs"], "msg": "wrong row width",
                               "type": "value_error"}])
    x = np.asarray(inputs, dtype=np.float64)
    if not np.isfinite(x).all():
        raise Invalid("inputs must be finite numbers",
                      errors=[{"loc": ["body", "inputs"], "msg": "non-finite value",
                               "type": "value_error"}])
    labels, probs = model.predict(x)
    return labels, probs.tolist(), list(model.classes)
