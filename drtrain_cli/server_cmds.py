"""Server-side commands: ``up`` (everything embedded), ``api``, ``worker``, ``migrate``, ``keys``.

``api``, ``worker``, ``migrate`` and ``keys`` are configured only by environment (DRTRAIN_*,
read by ``drtrain.kit.settings``); ``up`` sets the embedded defaults itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


def _settings(ctx: typer.Context):  # noqa: ANN202
    """The server's settings, with the global ``--data-dir`` when it was given: set in the
    environment, where ``api`` and ``worker`` hand it on to the processes they start."""
    from drtrain.kit.settings import get_settings

    data_dir = getattr(ctx.obj, "data_dir", None)
    if data_dir is not None:
        os.environ["DRTRAIN_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
        get_settings.cache_clear()
    settings = get_settings()
    try:
        settings.check_production()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings


def up(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(
        show_default=False, help="Where the SQLite file, objects, broker folder, api-key and "
                                 "url live (default: the global --data-dir, else .drtrain).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Training worker processes.")] = 1,
) -> None:
    """Run the whole service on this machine (SQLite, local objects, embedded broker)."""
    from drtrain_cli.embedded import run_embedded

    # `drtrain --data-dir X up` must not quietly use .drtrain while clients look in X.
    folder = data_dir or getattr(ctx.obj, "data_dir", None) or Path(".drtrain")
    raise typer.Exit(run_embedded(host=host, port=port, data_dir=folder, workers=workers))


def api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP API (uvicorn), configured by DRTRAIN_* environment variables."""
    import uvicorn

    _settings(ctx)
    uvicorn.run("api.app:main_app", factory=True, host=host, port=port, proxy_headers=True,
                log_level="info")


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once (one per GPU).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (a training process per "
                                           "job) or solo.")] = "prefork",
    queue: Annotated[str, typer.Option(help="Queue to consume.")] = "drtrain",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    name: Annotated[str | None, typer.Option(
        help="This worker's Celery node name: NAME@<host>, or NAME as given when it holds an "
             "@. Several workers on one host need different names (default: celery@<host>).")
    ] = None,
    jobs_per_device: Annotated[int | None, typer.Option(
        min=1, help="Jobs that may share one GPU, each in its own process, admitted while "
                    "their estimated memory fits the free device memory (sets "
                    "DRTRAIN_JOBS_PER_DEVICE; give --concurrency at least as many).")] = None,
) -> None:
    """Run a Celery training worker, configured by DRTRAIN_* environment variables."""
    if jobs_per_device is not None:
        # The pool's children read their settings from the environment they inherit.
        os.environ["DRTRAIN_JOBS_PER_DEVICE"] = str(jobs_per_device)
    _settings(ctx)
    from worker.argv import node_name, worker_argv
    from worker.celery_app import app as celery_app

    celery_app.worker_main(worker_argv(concurrency=concurrency, pool=pool, queue=queue,
                                       loglevel=loglevel, hostname=node_name(name)))


def migrate(ctx: typer.Context) -> None:
    """Bring the database schema up to date (Alembic)."""
    from drtrain.kit.migrate import upgrade

    settings = _settings(ctx)
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    typer.echo("database is up to date")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant name (created if missing).")],
) -> None:
    """Make an API key for TENANT and print it once (only its hash is stored)."""
    from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
    from drtrain.tenants.keys import create_key

    tenant = tenant.strip()
    if not tenant or len(tenant) > 100:
        typer.echo("error: --tenant must be 1 to 100 characters", err=True)
        raise typer.Exit(2)
    engine = make_engine(_settings(ctx).resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            key = create_key(session, tenant)
    finally:
        engine.dispose()
    typer.echo(f"API key for tenant {tenant} (shown once): {key}")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """List keys: tenant, prefix (the key's first characters), created, revoked."""
    from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
    from drtrain.tenants.keys import list_keys
    from drtrain_cli.commands.output import printable

    engine = make_engine(_settings(ctx).resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            rows = list_keys(session, tenant)
    finally:
        engine.dispose()
    typer.echo(f"{'TENANT':<24} {'PREFIX':<14} {'CREATED':<26} REVOKED")
    for row in rows:
        typer.echo(f"{printable(row.tenant):<24} {row.prefix:<14} {row.created_at.isoformat():<26} "
                   f"{row.revoked_at.isoformat() if row.revoked_at else '-'}")


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The key, or its prefix as `keys list` shows it.")],
) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
    from drtrain.tenants.keys import revoke_key

    engine = make_engine(_settings(ctx).resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            revoked = revoke_key(session, prefix.strip())
    finally:
        engine.dispose()
    if revoked == 0:
        typer.echo(f"error: no active key with prefix {prefix.strip()[:16]!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {revoked} key(s)")


def register(app: typer.Typer) -> None:
    for command in (up, api, worker, migrate):
        app.command()(command)
    app.add_typer(keys_app, name="keys")
