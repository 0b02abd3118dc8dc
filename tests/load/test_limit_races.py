"""The limits hold under races and with an Idempotency-Key, on PostgreSQL and on SQLite:
the active-job cap and the storage quota (submits keyed or not, uploads at once), and a
dataset delete against a submit naming it."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load import races
from tests.load.server import Api, pg_api, sqlite_api

pytestmark = pytest.mark.timeout(300)

CAP, QUEUED = 3, 2  # running slots, and queue places behind them
LIMIT = CAP + QUEUED  # the jobs a tenant may have before a submit answers 429
QUOTA = 1_000_000


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Api]:
    root: Path = tmp_path_factory.mktemp(request.param)
    make = pg_api if request.param == "postgresql" else sqlite_api
    with make(root, max_concurrent_jobs_per_tenant=str(CAP),
              max_queued_jobs_per_tenant=str(QUEUED),
              tenant_storage_quota_bytes=str(QUOTA)) as api:
        yield api


def test_keyed_submits_at_the_cap_are_refused_and_leave_no_job(server: Api) -> None:
    """A keyed submit's row is written in a savepoint: on SQLite one used to be able to
    outlive the refused submit's rollback, and the job ran though it was answered 429."""
    plain, keyed, held = races.plain_then_keyed(server, "keyed", LIMIT + 1, 20)
    assert plain == [202] * LIMIT + [429] and keyed == [429] * 20, (plain, keyed)
    assert held == LIMIT
    statuses, held = races.mixed_at_once(server, "keyed-at-once", 60)
    assert statuses == Counter({202: LIMIT, 429: 60 - LIMIT}), server.logs()
    assert held == LIMIT


def test_keyed_submits_at_the_quota_are_refused_and_leave_no_job(server: Api) -> None:
    headers = server.new_tenant("full")
    races.upload_ready(server, headers, races.csv_bytes(QUOTA))
    statuses, held = races.mixed_at_once(server, "full", 16, headers)
    assert statuses == Counter({429: 16}), server.logs()
    assert held == 0


def test_a_dataset_delete_and_a_submit_on_it_never_both_succeed(server: Api) -> None:
    """Either the delete answers 409 naming the job, or the submit 422 (the dataset is
    gone): the delete takes the tenant's submit lock, and a submit reads its datasets again
    under it."""
    both, outcomes = races.delete_submit_pairs(server, "deleter", 32)
    assert both == 0, outcomes
    assert set(outcomes) <= {(204, 422), (409, 202)}, outcomes


def test_concurrent_uploads_hold_the_storage_quota(server: Api) -> None:
    """4 uploads of 600 kB at once against a 1 MB quota: one is admitted, the others 413."""
    statuses, held = races.concurrent_uploads(server, "uploader", 4, 600_000)
    assert sorted(statuses) == [202, 413, 413, 413], statuses
    assert 600_000 <= held <= QUOTA
