"""The API against its own OpenAPI document, as Schemathesis checks a contract.

Every documented operation is exercised through Schemathesis's pytest integration with
every built-in check (server errors, status codes, content types, response headers and
bodies against their schemas, negative data rejected, positive data accepted, ignored auth,
unsupported methods...), then statefully: the links Schemathesis finds between operations
(a submitted job's id to its reads, cancel and delete) chain calls into scenarios.

The app is the embedded one (a SQLite file in a folder of this module's), with a tenant
whose key every case carries, and a small uploaded dataset and a submitted job, so listings
have items to link from. No worker runs, so jobs stay queued. Bounded: few examples per
operation, derandomized (the same cases every run), no example database.
"""
from __future__ import annotations

import io
import re
import secrets
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import ApiKey
from drtrain.kit.settings import Settings
from drtrain.tenants.keys import KEY_PREFIX, LOOKUP_CHARS, hash_key
from drtrain.tenants.repository import add_tenant
from tests.factories import small_spec

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

EXAMPLES_PER_OPERATION = 15
STATEFUL_SCENARIOS = 15
STEPS_PER_SCENARIO = 6
# An event stream of a queued job never ends on its own; a request is cut after this long
# (Schemathesis keeps the events that arrived before the cut and checks them).
REQUEST_TIMEOUT_SECONDS = 3.0
BOUNDED = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                   database=None, suppress_health_check=list(HealthCheck))

# Schema-valid requests the API rightly refuses with 422 because what makes them wrong is
# something no OpenAPI document can state: which strings are cursors this API issued, which
# ids name a dataset of this tenant, which bytes make a readable dataset file, which layer
# indices exist for the hidden layers the same spec asks for. positive_data_acceptance
# tolerates a 422 whose problem detail names one of these; any other 422 to a schema-valid
# request still fails it.
UNDESCRIBABLE_422 = re.compile("|".join((
    r"^page_token is not a token this API issued",
    r"dataset_id: dataset '.*' does not exist",
    # what the file's bytes hold (drtrain/datasets: formats, csvfile, arrays)
    r"^header row: ", r"^file: ", r"^labels_file: ", r"^array ", r"^row \d", r"^line \d",
    r"^not readable CSV", r"^the CSV file is empty", r"^the dataset has no ",
    r"^the labels hold one class", r"IDX (header|body|with)", r"NPZ", r"is not a \.npy array",
    r"finetune\.dr\.layers: indices \[.*\] out of range",
    # what the named datasets hold: an "auto" batch size's rows, a test set's classes
    r"side_rows_per_batch: \(\d+\) must be below the batch size: batch_size \"auto\"",
    r"test_dataset_id: classes \[.*\] do not occur in the training set",
    # A grid's points are the product of its lists' lengths, which a document cannot bound,
    # and a grid point is checked as a whole JobSpec, rules across fields included.
    # A grid path into a section exists only where the base holds an object there.
    r"^the grid has \d+ points", r"^grid point \{", r"^grid '.*': value ",
    r"^grid '.*': '.*' is not an object", r"^grid '.*': .* has no field '",
    # An upload's form may carry fields it does not name (they are ignored), and a list value
    # travels as repeated parts, so no schema bounds how many parts arrive; the parser stops
    # at a few (api/uploads.py).
    r"^malformed multipart body: Too many fields",
)))


def _embedded_settings(folder: Path) -> Settings:
    # ignored_auth sends requests without the key (and with a broken one) to every
    # operation, all from the one client address the in-process transport gives; the
    # failed-auth limiter would rightly answer 429 to everything after a score of them.
    # Jobs never finish here, so the active-jobs quota is raised for submits to go on
    # reaching the spec's checks instead of the quota's 429 (sweeps still meet theirs).
    return Settings(data_dir=folder, database_url="", broker_url="", storage_url="",
                    environment="embedded", fashion_mnist_dir=folder / "no-fashion-mnist",
                    auth_failures_per_window=10**9, max_concurrent_jobs_per_tenant=10**6)


def _seed(app: FastAPI) -> None:
    """A ready dataset and a queued job on the built-in digits, made through the API."""
    csv = "a,b,c,label\n" + "".join(f"{i % 5},{i % 3},{i % 7},{i % 2}\n" for i in range(40))
    with TestClient(app) as client:
        upload = client.post("/v1/datasets", headers=AUTH,
                             files={"file": ("toy.csv", io.BytesIO(csv.encode()), "text/csv")})
        assert upload.status_code == 202, upload.text
        job = client.post("/v1/jobs", json=small_spec("builtin:digits"), headers=AUTH)
        assert job.status_code == 202, job.text


def _document() -> dict:
    """The app's OpenAPI document, built at collection so each operation is a test of its
    own. Building the app touches nothing (no connection, no folder); the served app's
    document is checked to be this one (test_the_served_document_is_the_one_tested)."""
    return create_app(Settings(data_dir=Path("/nonexistent"), environment="test")).openapi()


class ServedApp:
    """The ASGI app every case goes to: the module's served app once the fixture has made
    it. Schemathesis's fixture-based loader (``schemathesis.pytest.from_fixture``) breaks
    under pytest 9 (it sets a node attribute pytest no longer has), so the schema is loaded
    at collection, before any fixture runs, and reaches the app through this."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        assert self.app is not None, "no app served yet: the `served` fixture makes it"
        await self.app(scope, receive, send)


SERVED_APP = ServedApp()
schema = schemathesis.openapi.from_dict(_document())
schema.app = SERVED_APP
# Every case carries the tenant's key as a configured header: Schemathesis then knows the
# key is the caller's (ignored_auth probes without it and with a wrong one). The key is
# drawn now because Schemathesis builds some of its cases at collection.
KEY = KEY_PREFIX + secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {KEY}"}
schema.config.update(request_timeout=REQUEST_TIMEOUT_SECONDS, headers=AUTH)


STATUSES: Counter[int] = Counter()  # every status the module's cases were answered with


def _say_statuses_seen(capsys: pytest.CaptureFixture[str]) -> None:
    """How many cases ran and which statuses answered them, on the terminal."""
    if STATUSES:
        seen = ", ".join(f"{code} x{n}" for code, n in sorted(STATUSES.items()))
        with capsys.disabled():
            print(f"\nschemathesis: {sum(STATUSES.values())} cases; statuses {seen}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    settings = _embedded_settings(tmp_path_factory.mktemp("schemathesis"))
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        tenant = add_tenant(session, "local")
        session.add(ApiKey(tenant_id=tenant.id, prefix=KEY[:LOOKUP_CHARS], key_hash=hash_key(KEY)))
    SERVED_APP.app = create_app(settings, engine=engine)
    try:
        _seed(SERVED_APP.app)
        yield SERVED_APP
    finally:
        # Schemathesis keeps an app's lifespan running until the process ends; this app's
        # ends with the module, before its engine and folder go.
        asgi.shutdown_lifespans()
        SERVED_APP.app = None
        engine.dispose()


def positive_data_accepted_where_describable(ctx: schemathesis.CheckContext,
                                             response: schemathesis.Response,
                                             case: schemathesis.Case) -> bool | None:
    """positive_data_acceptance, but for the 422s of UNDESCRIBABLE_422."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:  # Schemathesis's failures are AssertionErrors
        if response.status_code == 422 and (UNDESCRIBABLE_422.search(_detail(response))
                                             or _only_integral_floats(response, case)):
            return None
        raise


def _only_integral_floats(response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """A 422 refusing only numbers like 8.0 where an integer belongs. JSON Schema's integer
    admits them (a zero fraction), and no schema can say otherwise; the API refuses them on
    purpose (an integer field takes a JSON integer), so such a 422 is no contract breach."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    if _detail(response).startswith("grid ") and _detail(response).endswith(
            "Input should be a valid integer"):  # a grid value, checked as its field
        return _holds_integral_float(_at(case.body, ["grid"]))
    # A field of several alternatives (``"auto"`` or an integer) refuses by each of them.
    return (any(e.get("type") == "int_type" for e in errors) and all(
        e.get("type") in ("int_type", "literal_error") and e["loc"][:1] == ["body"]
        and _is_integral_float(_at(case.body, e["loc"][1:])) for e in errors))


def _holds_integral_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(map(_holds_integral_float, value.values()))
    if isinstance(value, list):
        return any(map(_holds_integral_float, value))
    return _is_integral_float(value)


def _at(body: Any, loc: list[Any]) -> Any:
    """The value at ``loc``; a trailing part the body does not hold is an alternative's tag
    (pydantic's ``constrained-int``, ``literal['auto']``) and is passed over."""
    for part in loc:
        if isinstance(body, dict) and part in body:
            body = body[part]
        elif isinstance(body, list) and isinstance(part, int) and part < len(body):
            body = body[part]
        else:
            return body if isinstance(part, str) and not isinstance(body, (dict, list)) \
                else None
    return body


def _is_integral_float(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


def _detail(response: schemathesis.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else ""


def _fresh_idempotency_key(case: schemathesis.Case) -> None:
    """An Idempotency-Key used once. Schemathesis draws the same few keys for different
    bodies, and the API rightly answers 422 to a key reused with another body; a fresh
    prefix keeps the drawn key (and its length within the documented 200)."""
    for name, value in (case.headers or {}).items():
        if name.lower() == "idempotency-key" and isinstance(value, str) and len(value) <= 200:
            case.headers[name] = (uuid.uuid4().hex + value)[:200]


def _validate(case: schemathesis.Case, response: schemathesis.Response,
              recorder: Any = None) -> None:
    STATUSES[response.status_code] += 1
    # Every built-in check runs; only positive_data_acceptance is narrowed (above). The
    # checks are told the key is the caller's whatever phase made the case; ignored_auth
    # otherwise takes it, in some cases, for one it generated, and a 200 for auth ignored.
    case.validate_response(response, recorder=recorder, headers=AUTH,
                           excluded_checks=[positive_data_acceptance],
                           additional_checks=[positive_data_accepted_where_describable])


def test_the_served_document_is_the_one_tested(served: ServedApp) -> None:
    assert served.app is not None
    with TestClient(served.app) as client:
        assert client.get("/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@BOUNDED
def test_every_operation_keeps_its_contract(case: schemathesis.Case, served: ServedApp) -> None:
    _fresh_idempotency_key(case)
    _validate(case, case.call())


def test_linked_operations_keep_their_contract(served: ServedApp,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in the module: it also says how many cases the module ran."""
    links = schema.as_state_machine()
    assert links.bundles, "Schemathesis found no links between operations to follow"

    class Scenarios(links):  # type: ignore[misc, valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            _fresh_idempotency_key(case)

        def validate_response(self, response: schemathesis.Response, case: schemathesis.Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            _validate(case, response, recorder=self.recorder)

    Scenarios.run(settings=settings(max_examples=STATEFUL_SCENARIOS, deadline=None,
                                    derandomize=True, database=None,
                                    suppress_health_check=list(HealthCheck),
                                    stateful_step_count=STEPS_PER_SCENARIO))
    _say_statuses_seen(capsys)
