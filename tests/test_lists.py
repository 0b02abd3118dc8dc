"""Every list of names has one source; the copies that must stay are held equal to it here.

- The maths names (divergences, distances, normalisations, units, optimisers, activations,
  initialisations, precisions) are dr_core/config.py's. The JobSpec (drtrain/jobs/spec.py) may
  not import dr_core (import-linter), so its Literals are copies, compared here with their
  defaults; the web form reads them from /openapi.json (tests/web checks that).
- Job statuses are drtrain/kit/models.py's JobStatus. drtrain_client stands alone, so its
  JOB_STATUSES and TERMINAL_STATUSES are copies (the CLI's --status choices are the former),
  and so is PREDICT_ROWS, the API's bound on rows per predict request.
- Phases and metric names are dr_core/events.py's; the domain's PHASES (drtrain/kit/models.py,
  which the OpenAPI document's phase enums use) is a copy.
- The web app keeps its copies of statuses, phases and metric names in web/src/names.ts alone
  (every other file names them through its types, which tsc checks).

A failure names both places: the source, and the copy that drifted from it.
"""
from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from api.schemas.jobs import MAX_PREDICT_ROWS
from dr_core import config as C
from dr_core import events
from dr_core.pair_kernels import KERNELS
from drtrain.jobs import spec as S
from drtrain.kit import models as M
from drtrain_client import JOB_STATUSES as CLIENT_STATUSES
from drtrain_client import TERMINAL_STATUSES as CLIENT_TERMINAL
from drtrain_client.client import PREDICT_ROWS as CLIENT_PREDICT_ROWS

ROOT = Path(__file__).resolve().parents[1]
NAMES_TS = ROOT / "web" / "src" / "names.ts"


def _literal(model: type[BaseModel], field: str) -> tuple[Any, ...]:
    return typing.get_args(model.model_fields[field].annotation)


# (JobSpec model, field, dr_core's tuple, its name there, the leading choices only the spec has)
SPEC_CHOICES = [
    (S.PretrainDR, "divergence", C.DIVERGENCES, "DIVERGENCES", ()),
    (S.FinetuneDR, "distance", C.DISTANCES, "DISTANCES", ()),
    (S.PretrainDR, "normalize", C.NORMALIZE, "NORMALIZE", ()),
    (S.FinetuneDR, "normalize", C.NORMALIZE, "NORMALIZE", ()),
    # "auto" is the service's: it picks one of dr_core's units from the data.
    (S.ModelSpec, "visible_units", C.VISIBLE_UNITS, "VISIBLE_UNITS", ("auto",)),
    (S.FinetuneSpec, "optimizer", C.OPTIMIZERS, "OPTIMIZERS", ()),
    (S.FinetuneSpec, "activation", C.ACTIVATIONS, "ACTIVATIONS", ()),
    (S.FinetuneSpec, "init", C.INITS, "INITS", ()),
    (S.JobSpec, "precision", C.PRECISIONS, "PRECISIONS", ()),
]


@pytest.mark.parametrize("model,field,source,name,extra", SPEC_CHOICES,
                         ids=[f"{m.__name__}.{f}" for m, f, *_ in SPEC_CHOICES])
def test_jobspec_choices_are_dr_cores(model, field, source, name, extra) -> None:
    assert _literal(model, field) == (*extra, *source), (
        f"drtrain/jobs/spec.py {model.__name__}.{field} is Literal{list(_literal(model, field))}, "
        f"but dr_core/config.py {name} is {source}: change both together")


# (JobSpec model, field, dr_core config class): a choice whose default both state.
SPEC_DEFAULTS = [
    (S.PretrainDR, "divergence", C.PosteriorDRConfig),
    (S.PretrainDR, "normalize", C.PosteriorDRConfig),
    (S.FinetuneDR, "distance", C.FeatureDRConfig),
    (S.FinetuneDR, "normalize", C.FeatureDRConfig),
    (S.FinetuneSpec, "optimizer", C.FinetuneConfig),
    (S.FinetuneSpec, "activation", C.FinetuneConfig),
    (S.FinetuneSpec, "init", C.FinetuneConfig),
]


@pytest.mark.parametrize("model,field,config", SPEC_DEFAULTS,
                         ids=[f"{m.__name__}.{f}" for m, f, _ in SPEC_DEFAULTS])
def test_jobspec_choice_defaults_are_dr_cores(model, field, config) -> None:
    spec_default = model.model_fields[field].default
    core_default = config.__dataclass_fields__[field].default
    assert spec_default == core_default, (
        f"drtrain/jobs/spec.py {model.__name__}.{field} defaults to {spec_default!r}, "
        f"dr_core/config.py {config.__name__}.{field} to {core_default!r}")


def test_every_divergence_has_a_pair_kernel() -> None:
    assert tuple(KERNELS) == C.DIVERGENCES, (
        f"dr_core/pair_kernels.py KERNELS has {tuple(KERNELS)}, dr_core/config.py DIVERGENCES "
        f"{C.DIVERGENCES}")


def test_status_lists_derive_from_job_status() -> None:
    assert M.JOB_STATUSES == tuple(s.value for s in M.JobStatus)
    assert set(M.ACTIVE_STATUSES) | set(M.TERMINAL_STATUSES) == set(M.JobStatus)
    assert not set(M.ACTIVE_STATUSES) & set(M.TERMINAL_STATUSES)
    assert all(re.fullmatch(M.JOB_STATUS_PATTERN, s) for s in M.JOB_STATUSES)
    assert not re.fullmatch(M.JOB_STATUS_PATTERN, "queuedx")


def test_the_domains_phases_are_dr_cores() -> None:
    assert M.PHASES == events.PHASES, (
        f"drtrain/kit/models.py PHASES is {M.PHASES}, dr_core/events.py PHASES "
        f"{events.PHASES}: change both together")


def test_the_clients_predict_rows_are_the_apis_bound() -> None:
    assert CLIENT_PREDICT_ROWS == MAX_PREDICT_ROWS, (
        f"drtrain_client/client.py PREDICT_ROWS is {CLIENT_PREDICT_ROWS}, "
        f"api/schemas/jobs.py MAX_PREDICT_ROWS {MAX_PREDICT_ROWS}")


def test_the_clients_statuses_are_the_servers() -> None:
    assert CLIENT_STATUSES == M.JOB_STATUSES, (
        f"drtrain_client/client.py JOB_STATUSES is {CLIENT_STATUSES}, "
        f"drtrain/kit/models.py JobStatus {M.JOB_STATUSES}")


def test_the_clients_terminal_statuses_are_the_servers() -> None:
    server = {s.value for s in M.TERMINAL_STATUSES}
    assert CLIENT_TERMINAL == server, (
        f"drtrain_client/client.py TERMINAL_STATUSES is {sorted(CLIENT_TERMINAL)}, "
        f"drtrain/kit/models.py TERMINAL_STATUSES {sorted(server)}")


def _ts_list(name: str) -> tuple[str, ...]:
    text = NAMES_TS.read_text(encoding="utf-8")
    found = re.search(rf"export const {name}\b[^=]*= \[(.*?)\]", text, re.S)
    assert found, f"web/src/names.ts has no list {name}"
    return tuple(re.findall(r'"([^"]*)"', found.group(1)))


def _ts_string(name: str) -> str:
    found = re.search(rf'export const {name} = "([^"]*)";', NAMES_TS.read_text(encoding="utf-8"))
    assert found, f"web/src/names.ts has no string {name}"
    return found.group(1)


# (list in web/src/names.ts, its source, the source's name)
TS_LISTS = [
    ("JOB_STATUSES", M.JOB_STATUSES, "drtrain/kit/models.py JOB_STATUSES"),
    ("TERMINAL_STATUSES", tuple(s.value for s in M.TERMINAL_STATUSES),
     "drtrain/kit/models.py TERMINAL_STATUSES"),
    ("DATASET_STATUSES", tuple(s.value for s in M.DatasetStatus),
     "drtrain/kit/models.py DatasetStatus"),
    ("PHASES", events.PHASES, "dr_core/events.py PHASES"),
    ("PRETRAIN_METRICS", events.PRETRAIN_METRICS, "dr_core/events.py PRETRAIN_METRICS"),
    ("FINETUNE_METRICS", events.FINETUNE_METRICS, "dr_core/events.py FINETUNE_METRICS"),
    ("FINAL_METRICS", events.FINAL_METRICS, "dr_core/events.py FINAL_METRICS"),
    ("SYSTEM_METRICS", events.SYSTEM_METRICS, "dr_core/events.py SYSTEM_METRICS"),
]


@pytest.mark.parametrize("name,source,where", TS_LISTS, ids=[n for n, *_ in TS_LISTS])
def test_the_web_apps_names_are_the_sources(name, source, where) -> None:
    assert _ts_list(name) == tuple(source), (
        f"web/src/names.ts {name} is {list(_ts_list(name))}, {where} {list(source)}: "
        "change both (and rebuild the app, web/README.md)")


@pytest.mark.parametrize("name", ["GRAD_NORM", "GRAD_NORM_DR"])
def test_the_web_apps_gradient_prefixes_are_dr_cores(name) -> None:
    assert _ts_string(name) == getattr(events, name), \
        f"web/src/names.ts {name} differs from dr_core/events.py {name}"

