"""Server-side commands: ``up`` (everything embedded), ``api``, ``worker``, ``migrate``, ``keys``.

``api``, ``worker``, ``migrate`` and ``keys`` are configured only by environment (DRTRAIN_*,
read by ``api.settings``); ``up`` sets the embedded defaults itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


def _settings():  # noqa: ANN202
    from api.settings import get_settings

    settings = get_settings()
    try:
        settings.check_production()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings


def up(
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite file, objects, broker "
                                                "folder and api-key live.")] = Path(".drtrain"),
    workers: Annotated[int, typer.Option(min=1, max=64, help="Training worker processes.")] = 1,
) -> None:
    """Run the whole service on this machine (SQLite, local objects, embedded broker)."""
    from drtrain_cli.embedded import run_embedded

    raise typer.Exit(run_embedded(host=host, port=port, data_dir=data_dir, workers=workers))


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP API (uvicorn), configured by DRTRAIN_* environment variables."""
    import uvicorn

    _settings()
    uvicorn.run("api.app:main_app", factory=True, host=host, port=port, proxy_headers=True,
                log_level="info")


def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once (one per GPU).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (a training process per "
                                           "job) or solo.")] = "prefork",
    queue: Annotated[str, typer.Option(help="Queue to consume.")] = "drtrain",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run a Celery training worker, configured by DRTRAIN_* environment variables."""
    _settings()
    from worker.celery_app import app as celery_app

    celery_app.worker_main(worker_argv(concurrency=concurrency, pool=pool, queue=queue,
                                       loglevel=loglevel))


def worker_argv(*, concurrency: int = 1, pool: str = "prefork", queue: str = "drtrain",
                loglevel: str = "INFO", hostname: str | None = None) -> list[str]:
    argv = ["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--queues={queue}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def migrate() -> None:
    """Bring the database schema up to date (Alembic)."""
    from api.migrate import upgrade

    settings = _settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    typer.echo("database is up to date")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if missing).")],
) -> None:
    """Make an API key for TENANT and print it once (only its hash is stored)."""
    from api.db import make_engine, make_sessionmaker, session_scope
    from api.services.keys import create_key

    tenant = tenant.strip()
    if not tenant or len(tenant) > 100:
        typer.echo("error: --tenant must be 1 to 100 characters", err=True)
        raise typer.Exit(2)
    engine = make_engine(_settings().resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            key = create_key(session, tenant)
    finally:
        engine.dispose()
    typer.echo(f"API key for tenant {tenant} (shown once): {key}")


def register(app: typer.Typer) -> None:
    for command in (up, api, worker, migrate):
        app.command()(command)
    app.add_typer(keys_app, name="keys")
