"""What tests build their cases from: rows in the database, job specs, upload bodies and
model files. One module, so a test never imports another test module for its helpers.

Rows are committed through the test's session (in tests/api and tests/drtrain a savepoint
release), so a request that fails and rolls the session back leaves the test's setup intact.
"""
from __future__ import annotations

import copy
import gzip
import io
import json
import math
import struct
import uuid
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save
from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec, spec_to_dict
from drtrain.kit.models import Checkpoint, Dataset, Job, JobStatus, MetricPoint, Sweep, utcnow
from drtrain.kit.storage import ObjectStore
from drtrain.tenants.repository import tenant_by_name

# ---------------------------------------------------------------- rows


def tenant_id(db: Session, name: str = "tenant-a") -> str:
    """The id of a tenant a key fixture (``tenant_a_key``, ``auth_a``...) has created."""
    tenant = tenant_by_name(db, name)
    assert tenant is not None
    db.commit()  # keep the key fixtures' rows if a failing request rolls the session back
    return tenant.id


def add_dataset(db: Session, owner: str, *, n_features: int = 4, n_classes: int = 3,
                feature_range: tuple[float, float] = (0.0, 1.0)) -> Dataset:
    """A ready dataset row (no object behind it) as a finished upload check leaves it."""
    ds = Dataset(tenant_id=owner, name="toy", format="csv", object_key=f"datasets/{uuid.uuid4().hex}",
                 n_samples=30, n_features=n_features, n_classes=n_classes,
                 class_counts={str(i): 10 for i in range(n_classes)},
                 feature_range=list(feature_range),
                 visible_units_hint="bernoulli" if feature_range[0] >= 0 and feature_range[1] <= 1
                 else "gaussian", sha256="0" * 64, size_bytes=100)
    db.add(ds)
    db.commit()
    return ds


def small_spec(dataset_id: str, **top: object) -> dict:
    """A JobSpec body small enough to train in a blink, with ``top`` fields replaced."""
    spec = {"dataset_id": dataset_id, "model": {"hidden_layers": [8, 4]},
            "pretrain": {"epochs": 1}, "finetune": {"epochs": 1}}
    spec.update(top)
    return spec


def add_job(db: Session, owner: str, status: JobStatus = JobStatus.queued, **kw: object) -> Job:
    """A job row on the built-in digits, with its spec defaulted as submit stores it."""
    spec = spec_to_dict(JobSpec.model_validate(small_spec("builtin:digits")))
    kw.setdefault("dispatched_at", utcnow())  # as a job given a running slot at submit
    job = Job(tenant_id=owner, dataset_id="builtin:digits", spec=spec, status=status, **kw)
    db.add(job)
    db.commit()
    return job


def add_points(db: Session, job: Job, n: int, start: int = 1) -> None:
    """``n`` pretrain metric points for ``job``, numbered from ``start``."""
    for seq in range(start, start + n):
        db.add(MetricPoint(job_id=job.id, seq=seq, attempt=1, phase="pretrain", layer=0,
                           layer_key=0, epoch=seq, name="reconstruction_error", value=1.0 / seq))
    db.commit()


def get_job(factory: sessionmaker[Session], job_id: str) -> Job:
    """A job as committed, read in a session of its own (worker tests commit for real)."""
    with factory() as s:
        return s.get(Job, job_id)


@dataclass(frozen=True)
class World:
    """Ids of one tenant's objects, one of each kind a route can name."""

    dataset_id: str
    job_id: str  # succeeded: metrics, checkpoints and a model that predicts on 3 features
    queued_job_id: str  # active: cancel would change it, delete of its dataset would be 409
    sweep_id: str
    checkpoint_id: str  # the succeeded job's final model
    n_features: int = 3


def seed_tenant(db: Session, store: ObjectStore, owner: str) -> World:
    """One object of each kind for ``owner``, committed (a savepoint release) so a failed
    request in the test cannot roll them back."""
    ds = add_dataset(db, owner, n_features=3, n_classes=3)
    spec = spec_to_dict(JobSpec.model_validate(small_spec(ds.id)))
    sweep = Sweep(tenant_id=owner, base=spec, grid={"seed": [0]})
    db.add(sweep)
    db.flush()
    done = Job(tenant_id=owner, dataset_id=ds.id, spec=spec, status=JobStatus.succeeded,
               result={"metrics": {"test_accuracy": 0.5}}, sweep_id=sweep.id,
               grid_point={"seed": 0})
    queued = Job(tenant_id=owner, dataset_id=ds.id, spec=spec, status=JobStatus.queued)
    db.add_all([done, queued])
    db.flush()
    model = store.put_stream(f"jobs/{done.id}/final.safetensors", [make_model_bytes(d=3)])
    final = Checkpoint(job_id=done.id, kind="final", phase="finetune", attempt=1,
                       object_key=model.key, sha256=model.sha256, size_bytes=model.size_bytes)
    db.add_all([
        final,
        *(MetricPoint(job_id=done.id, seq=seq, attempt=1, phase="finetune", layer=None,
                      layer_key=-1, epoch=seq, name="train_loss", value=1.0 / seq)
          for seq in (1, 2, 3)),
    ])
    db.commit()
    return World(dataset_id=ds.id, job_id=done.id, queued_job_id=queued.id, sweep_id=sweep.id,
                 checkpoint_id=final.id)


# ---------------------------------------------------------------- data and model files


def digits_subset(n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` rows of sklearn's digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16.0).astype(np.float32), y[:n].astype(np.int64)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def idx_bytes(array: np.ndarray, code: int = 0x08, *, gz: bool = True,
              dims: tuple[int, ...] | None = None) -> bytes:
    """An IDX file (MNIST's format) holding ``array``; ``dims`` may lie about its shape."""
    dims = array.shape if dims is None else dims
    raw = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    return gzip.compress(raw) if gz else raw


def make_model_bytes(*, d: int = 3, hidden: tuple[int, ...] = (4, 2), classes=("a", "b", "c"),
                     activation: str = "sigmoid", fmt: str = "drtrain-mlp", seed: int = 0,
                     head: bool = True) -> bytes:
    """A model file in dr_core's layout, written with numpy only."""
    rng = np.random.default_rng(seed)
    t = {"input.mean": rng.normal(size=d).astype(np.float32),
         "input.std": rng.uniform(0.5, 2.0, size=d).astype(np.float32)}
    dims = [d, *hidden]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        t[f"hidden.{i}.weight"] = rng.normal(size=(b, a)).astype(np.float32)
        t[f"hidden.{i}.bias"] = rng.normal(size=b).astype(np.float32)
    if head:
        t["head.weight"] = rng.normal(size=(len(classes), dims[-1])).astype(np.float32)
        t["head.bias"] = rng.normal(size=len(classes)).astype(np.float32)
    meta = {"format": fmt, "format_version": 1, "activation": activation,
            "hidden_layers": list(hidden), "n_features": d, "classes": list(classes)}
    return save(t, metadata={"drtrain": json.dumps(meta)})


def hand_forward(data: bytes, x: list[list[float]], activation: str) -> list[list[float]]:
    """The same maths written out in plain Python loops (no numpy matrix code)."""
    from safetensors.numpy import load

    t = {k: v.astype(float).tolist() for k, v in load(data).items()}
    acts = {"sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh,
            "relu": lambda v: max(v, 0.0)}
    out = []
    for row in x:
        h = [(v - m) / s for v, m, s in zip(row, t["input.mean"], t["input.std"])]
        i = 0
        while f"hidden.{i}.weight" in t:
            w, b = t[f"hidden.{i}.weight"], t[f"hidden.{i}.bias"]
            h = [acts[activation](sum(wj * hj for wj, hj in zip(wr, h)) + bj)
                 for wr, bj in zip(w, b)]
            i += 1
        logits = [sum(wj * hj for wj, hj in zip(wr, h)) + bj
                  for wr, bj in zip(t["head.weight"], t["head.bias"])]
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        out.append([v / sum(e) for v in e])
    return out


# ---------------------------------------------------------------- uploads through the API


def upload(client, headers, content: bytes, filename: str = "data.csv", *,  # noqa: ANN001, ANN201
           labels: bytes | None = None, **fields: str):
    files = {"file": (filename, content, "application/octet-stream")}
    if labels is not None:
        files["labels_file"] = ("labels.gz", labels, "application/octet-stream")
    return client.post("/v1/datasets", headers=headers, files=files, data=fields)


def checked(client, headers, resp) -> dict:  # noqa: ANN001
    """An accepted upload as its check left it."""
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "validating" and body["n_samples"] is None, body
    assert resp.headers["location"] == f"/v1/datasets/{body['id']}"
    return client.get(resp.headers["location"], headers=headers).json()


def upload_ready(client, headers, content: bytes, filename: str = "data.csv",  # noqa: ANN001
                 **kw) -> dict:
    body = checked(client, headers, upload(client, headers, content, filename, **kw))
    assert body["status"] == "ready" and body["status_reason"] is None, body
    return body


def add_local_job(session: Session, **kw: object) -> Job:
    """A job of the tenant "local" (the ``embedded`` fixture's), flushed, not committed."""
    tenant = tenant_by_name(session, "local")
    assert tenant is not None
    spec = spec_to_dict(JobSpec.model_validate(small_spec("builtin:digits")))
    job = Job(tenant_id=tenant.id, dataset_id="builtin:digits", spec=spec, **kw)
    session.add(job)
    session.flush()
    return job


def spec_with(path: tuple[str, ...], value: object) -> dict:
    """The documented JobSpec example with ``value`` at ``path`` (a section that is off by
    default, such as finetune.dr, is switched on to hold it)."""
    spec = copy.deepcopy(JOB_SPEC_EXAMPLE)
    node = spec
    for part in path[:-1]:
        if node[part] is None:
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return spec
