"""Operations: liveness, readiness and Prometheus metrics. No API key: these are scraped
(``/metrics`` may need its own token, see ``api.ops_metrics.check_metrics_access``). And the
settings a client shows (``/v1/settings``), which does take a key like every ``/v1`` route."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from api.deps import SettingsDep, TenantDep
from api.ops_metrics import check_metrics_access, render_metrics
from api.problems import problem
from api.readiness import broker_ping, storage_room
from api.schemas.common import problem_responses
from drtrain.kit.db import ping
from drtrain.kit.errors import InsufficientStorage, Unavailable
from drtrain.kit.storage import BucketMissing

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


class ServerSettings(BaseModel):
    """What a client shows of this server's configuration, so it need not assume a default."""

    checkpoint_every_epochs: int = Field(description="`DRTRAIN_CHECKPOINT_EVERY_EPOCHS`")
    checkpoint_every_seconds: float = Field(
        description="`DRTRAIN_CHECKPOINT_EVERY_SECONDS` (0: epochs only)")


@router.get("/v1/settings", response_model=ServerSettings)
def server_settings(tenant: TenantDep, settings: SettingsDep) -> ServerSettings:
    return ServerSettings(checkpoint_every_epochs=settings.checkpoint_every_epochs,
                          checkpoint_every_seconds=settings.checkpoint_every_seconds)


def _checks(request: Request, settings: SettingsDep) -> dict[str, str]:
    results: dict[str, str] = {}
    probes = {
        "database": lambda: _db_ping(request),
        "object_store": request.app.state.store.ping,
        "broker": lambda: broker_ping(settings),
        "storage": lambda: storage_room(request.app.state, settings),
    }
    for name, probe in probes.items():
        try:
            probe()
            results[name] = "ok"
        except InsufficientStorage as exc:
            results[name] = f"full ({exc.detail})"
        except BucketMissing as exc:  # reachable, but misconfigured: say exactly that
            results[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which kind
            results[name] = f"unreachable ({type(exc).__name__})"
    return results


def _db_ping(request: Request) -> None:
    ping(request.app.state.engine)


# How long a prober is told to wait after a 503 (its own period usually decides).
READY_RETRY_AFTER_SECONDS = 5


@router.get("/readyz", summary="Database, broker and object store are reachable",
            responses={503: {"description": "A dependency is unreachable: the problem names "
                                            "it, and `checks` holds every probe's outcome"}})
def readyz(checks: Annotated[dict[str, str], Depends(_checks)]) -> JSONResponse:
    failing = [name for name, outcome in checks.items() if outcome != "ok"]
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    return problem(503, "; ".join(f"{name} {checks[name]}" for name in failing),
                   title=Unavailable.title, type_=Unavailable.type_,
                   headers={"Retry-After": str(READY_RETRY_AFTER_SECONDS)},
                   members={"checks": checks})


@router.get("/metrics", summary="Prometheus text exposition", response_class=PlainTextResponse,
            responses=problem_responses(401, 404, 429))
def prometheus_metrics(request: Request, settings: SettingsDep) -> PlainTextResponse:
    # Read here, not declared: a scrape endpoint's credential is no documented parameter.
    check_metrics_access(request, settings, request.headers.get("authorization"))
    body = render_metrics(request.app.state.request_stats, request.app.state.sessionmaker)
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")
