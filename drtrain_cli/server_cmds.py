"""Server-side commands: ``up`` (everything embedded), ``api``, ``worker``, ``migrate``, ``keys``.

``api``, ``worker``, ``migrate`` and ``keys`` are configured only by environment (DRTRAIN_*,
read by ``drtrain.kit.settings``); ``up`` sets the embedded defaults itself.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


def _settings(ctx: typer.Context, *, database_only: bool = False):  # noqa: ANN202
    """The server's settings, with the global ``--data-dir`` when it was given: set in the
    environment, where ``api`` and ``worker`` hand it on to the processes they start.
    ``database_only``: a command that uses the database alone (``migrate``, ``keys``) needs no
    broker or object store named in production. A bad value is one line naming its variable
    (exit 2), not pydantic's traceback."""
    from pydantic import ValidationError

    from drtrain.kit.errors import validation_message
    from drtrain.kit.settings import BACKENDS, get_settings

    data_dir = getattr(ctx.obj, "data_dir", None)
    if data_dir is not None:
        os.environ["DRTRAIN_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
        get_settings.cache_clear()
    try:
        settings = get_settings()
        settings.check_production(("database_url",) if database_only else BACKENDS)
    except ValidationError as exc:
        for error in exc.errors():
            name = "DRTRAIN_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"error: {name}={error.get('input')!r}: {validation_message(error)}",
                       err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings


def _migrate_first(url: str) -> str:
    """What to do about a database that a ``keys`` command cannot use."""
    if url.startswith("sqlite"):
        return ("`drtrain migrate` creates the database and its tables (give it the same "
                "--data-dir or DRTRAIN_DATABASE_URL); `drtrain up` does it too")
    return ("create the database if it does not exist (`createdb`), then `drtrain migrate` "
            "creates its tables (with the same DRTRAIN_DATABASE_URL)")


@contextmanager
def _database_errors(url: str, hint: str | None = None) -> Iterator[None]:
    """A database that cannot be reached, or has no tables yet, is said in words (exit 1)
    rather than with SQLAlchemy's traceback; the URL is shown without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

    try:
        yield
    except (ArgumentError, NoSuchModuleError) as exc:  # a URL SQLAlchemy cannot use at all
        typer.echo(f"error: DRTRAIN_DATABASE_URL: {exc} (PostgreSQL: "
                   "postgresql+psycopg://user:password@host/database)", err=True)
        raise typer.Exit(2) from exc
    except (OperationalError, ProgrammingError) as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        typer.echo(f"error: database {shown}: {str(exc.orig).strip()}", err=True)
        if hint:
            typer.echo(hint, err=True)
        raise typer.Exit(1) from exc


@contextmanager
def _session(ctx: typer.Context) -> Iterator[Session]:
    """A transaction on the configured database, for the ``keys`` commands."""
    from drtrain.kit.db import make_engine, make_sessionmaker, session_scope

    url = _settings(ctx, database_only=True).resolved_database_url
    with _database_errors(url, _migrate_first(url)):
        engine = make_engine(url)
    try:
        with _database_errors(url, _migrate_first(url)), \
                session_scope(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


# An event stream stays open for as long as its job runs: without a bound, a SIGTERM would wait
# for every watched job to end, and the orchestrator's SIGKILL would skip the API's shutdown.
SHUTDOWN_GRACE_SECONDS = 5.0


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
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        show_default=False,
        help="Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: addresses or "
             "networks, comma-separated, or '*' (default: $FORWARDED_ALLOW_IPS, else "
             "127.0.0.1). Behind a load balancer on another host, name it, or every client "
             "shares the proxy's address (and its failed-key budget).")] = None,
    shutdown_grace: Annotated[float, typer.Option(
        min=0, help="Seconds a SIGTERM waits for requests in progress, open event streams "
                    "included, before closing them and stopping.")] = SHUTDOWN_GRACE_SECONDS,
) -> None:
    """Run the HTTP API (uvicorn), configured by DRTRAIN_* environment variables."""
    import uvicorn

    _settings(ctx)
    uvicorn.run("api.app:main_app", factory=True, host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, log_level="info",
                timeout_graceful_shutdown=shutdown_grace)


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
    from drtrain.kit.migrate import current_revision, upgrade

    settings = _settings(ctx, database_only=True)
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with _database_errors(url):
        before = current_revision(url)
        upgrade(url)
        after = current_revision(url)
    typer.echo(f"database is up to date (revision {after})" if before == after else
               f"database migrated from revision {before or 'none'} to {after}")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant name (created if missing).")],
) -> None:
    """Make an API key for TENANT and print it once (only its hash is stored)."""
    from drtrain.tenants.keys import create_key
    from drtrain.tenants.repository import tenant_by_name

    tenant = tenant.strip()
    if not tenant or len(tenant) > 100:
        typer.echo("error: --tenant must be 1 to 100 characters", err=True)
        raise typer.Exit(2)
    with _session(ctx) as session:
        new = tenant_by_name(session, tenant) is None
        key = create_key(session, tenant)
    if new:  # said, since names are exact: "Alice" beside "alice" is a tenant of its own
        typer.echo(f"created tenant {tenant!r}", err=True)
    typer.echo(f"API key for tenant {tenant} (shown once): {key}")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """List keys: tenant, prefix (the key's first characters), created, revoked (UTC)."""
    from drtrain.tenants.keys import list_keys
    from drtrain_cli.commands.output import console, table, when

    with _session(ctx) as session:
        rows = list_keys(session, tenant)
    console.print(table(["TENANT", "PREFIX", "CREATED", "REVOKED"],
                        [[row.tenant, row.prefix, when(_utc(row.created_at)),
                          when(_utc(row.revoked_at))] for row in rows], keep=4))


def _utc(moment: datetime | None) -> str | None:
    """In UTC, whatever zone the database hands back (SQLite: naive, already UTC)."""
    if moment is None:
        return None
    return (moment.astimezone(UTC) if moment.tzinfo else moment).isoformat()


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The key, or its prefix as `keys list` shows it.")],
) -> None:
    """Revoke a key: requests with it answer 401 once each API process's key cache has
    expired (DRTRAIN_AUTH_CACHE_SECONDS)."""
    from drtrain.tenants.keys import LOOKUP_CHARS, revoke_key

    if len(prefix.strip()) < LOOKUP_CHARS:
        # every key starts with drt_: a shorter start could name them all
        typer.echo(f"error: give at least the key's first {LOOKUP_CHARS} characters, as "
                   "`drtrain keys list` shows them", err=True)
        raise typer.Exit(2)
    with _session(ctx) as session:
        revoked = revoke_key(session, prefix.strip())
    if revoked == 0:
        typer.echo(f"error: no active key with prefix {prefix.strip()[:16]!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {revoked} key(s)")


def register(app: typer.Typer) -> None:
    for command in (up, api, worker, migrate):
        app.command()(command)
    app.add_typer(keys_app, name="keys")
