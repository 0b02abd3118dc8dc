"""Who may read /metrics (open, behind a token, off; a token by default in production), and the
per-client-address limit on failed authentications (429 with Retry-After)."""
from __future__ import annotations

import warnings

import pytest
from pydantic import SecretStr

from api.app import create_app
from api.auth_limits import FailedAuthLimiter
from api.ops_metrics import metrics_mode
from drtrain.kit.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

WRONG = {"Authorization": "Bearer drt_" + "W" * 43}


def test_metrics_are_protected_by_default_in_production_only() -> None:
    assert metrics_mode(Settings(environment="production")) == "token"
    assert metrics_mode(Settings(environment="embedded")) == "open"
    assert metrics_mode(Settings(environment="production", metrics_access="open")) == "open"
    with pytest.raises(ValueError):
        Settings(metrics_access="sometimes")


def _metrics(app, monkeypatch, headers=None, **settings):  # noqa: ANN001, ANN202
    for name, value in settings.items():
        monkeypatch.setattr(app.state.settings, name, value)
    with TestClient(app) as c:
        return c.get("/metrics", headers=headers or {})


def test_metrics_behind_a_token(app, monkeypatch) -> None:  # noqa: ANN001
    token = {"metrics_access": "token", "metrics_token": SecretStr("s3cret-scrape")}
    anonymous = _metrics(app, monkeypatch, **token)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "drtrain_jobs" not in anonymous.text
    assert _metrics(app, monkeypatch, {"Authorization": "Bearer nope"}, **token).status_code == 401
    ok = _metrics(app, monkeypatch, {"Authorization": "Bearer s3cret-scrape"}, **token)
    assert ok.status_code == 200 and "drtrain_jobs{" in ok.text


def test_metrics_off_or_token_without_a_token_serve_nothing(app, monkeypatch) -> None:  # noqa: ANN001
    for settings in ({"metrics_access": "off"},
                     {"metrics_access": "token", "metrics_token": None},
                     {"metrics_access": "token", "metrics_token": SecretStr("")}):
        resp = _metrics(app, monkeypatch, **settings)
        assert resp.status_code == 404 and "drtrain_jobs" not in resp.text


def test_production_app_does_not_show_metrics_without_its_token(settings, engine, store) -> None:  # noqa: ANN001
    prod = settings.model_copy(update={"environment": "production"})
    with TestClient(create_app(prod, engine=engine, store=store)) as c:
        assert c.get("/metrics").status_code == 404  # no token configured: nothing served
        assert c.get("/healthz").status_code == 200


def test_wrong_keys_from_one_address_get_429_with_retry_after(app, client, auth_a,
                                                              monkeypatch) -> None:  # noqa: ANN001
    app.state.auth_limiter = FailedAuthLimiter(3, 60.0)
    for _ in range(3):
        assert client.get("/v1/jobs", headers=WRONG).status_code == 401
    blocked = client.get("/v1/jobs", headers=WRONG)
    assert blocked.status_code == 429, blocked.text
    assert blocked.headers["content-type"] == "application/problem+json"
    assert 0 < int(blocked.headers["retry-after"]) <= 60
    assert blocked.json()["type"] == "https://drtrain.dev/problems/auth-rate-limited"
    # While blocked, a valid key from the same address is refused too: the answer must not
    # tell a guesser that it has found a key.
    assert client.get("/v1/jobs", headers=auth_a).status_code == 429


def test_requests_without_a_key_count_as_failures(app, client, auth_a) -> None:  # noqa: ANN001
    # A client sending bodies with no key is held back like one guessing keys.
    app.state.auth_limiter = FailedAuthLimiter(3, 60.0)
    for _ in range(3):
        assert client.get("/v1/jobs").status_code == 401
    assert client.post("/v1/jobs", content=b"{}").status_code == 429
    assert client.get("/v1/jobs", headers=auth_a).status_code == 429


def test_the_limit_is_per_address_and_forgets_after_the_window() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(2, 10.0, max_clients=3, clock=lambda: now[0])
    limiter.record_failure("a")
    limiter.record_failure("a")
    assert limiter.retry_after("a") == pytest.approx(10.0)
    assert limiter.retry_after("b") is None
    now[0] += 4
    assert limiter.retry_after("a") == pytest.approx(6.0)
    now[0] += 6.5
    assert limiter.retry_after("a") is None
    for name in ("c", "d", "e", "f"):  # bounded memory: the oldest address is forgotten
        limiter.record_failure(name)
    assert len(limiter._failures) == 3


def test_wrong_metrics_tokens_count_as_failed_authentications(app, monkeypatch) -> None:  # noqa: ANN001
    app.state.auth_limiter = FailedAuthLimiter(2, 60.0)
    token = {"metrics_access": "token", "metrics_token": SecretStr("right")}
    for _ in range(2):
        assert _metrics(app, monkeypatch, {"Authorization": "Bearer wrong"},
                        **token).status_code == 401
    resp = _metrics(app, monkeypatch, {"Authorization": "Bearer right"}, **token)
    assert resp.status_code == 429 and resp.headers["retry-after"]
