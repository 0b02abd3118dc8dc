"""How client commands reach the server: ``--url``, ``--key`` and ``--data-dir`` are read once,
by the root callback, into ``ctx.obj`` (a ``ClientOptions``); the first command that needs the
server resolves them with ``drtrain_client.resolve_connection`` and makes the one ``Client``.

For scripts written before the options became global, every client command also accepts them
after its name (``drtrain jobs list --url ...``); those win over the global ones.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from drtrain_cli.commands.output import EXIT_UNREACHABLE, fail, warn
from drtrain_client import (
    Client,
    ClientError,
    Connection,
    DrtrainError,
    UnreachableError,
    resolve_connection,
)

PANEL = "Connection"
Url = Annotated[str | None, typer.Option(
    "--url", show_default=False, rich_help_panel=PANEL,
    help="Server URL (default: $DRTRAIN_URL, else <data-dir>/url, else http://127.0.0.1:8000).")]
Key = Annotated[str | None, typer.Option(
    "--key", show_default=False, rich_help_panel=PANEL,
    help="API key (default: $DRTRAIN_API_KEY, else <data-dir>/api-key).")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", show_default=False, rich_help_panel=PANEL,
    help="Data folder of `drtrain up` (default: $DRTRAIN_DATA_DIR, else .drtrain).")]

F = TypeVar("F", bound=Callable[..., Any])


def make_client(url: str | None, key: str | None, data_dir: Path | None) -> Client:
    """The one place the CLI builds a client; tests replace it to inject a mock transport.
    It gets the options as given: the client resolves them as the CLI does, and so knows
    where its URL came from when it has to say that nothing answers there."""
    return Client(url, key, data_dir=data_dir, on_retry=say_retry)


def say_retry(answer: DrtrainError, seconds: float) -> None:
    """A line on stderr for each wait on a busy server, so a command never hangs silently."""
    warn(f"server busy ({answer}); trying again in {seconds:.0f} s")


@dataclass
class ClientOptions:
    """The connection options of this invocation, and the client made from them on first use."""

    url: str | None = None
    key: str | None = None
    data_dir: Path | None = None
    _client: Client | None = field(default=None, init=False, repr=False)

    def override(self, url: str | None, key: str | None, data_dir: Path | None) -> None:
        self.url = url or self.url
        self.key = key or self.key
        self.data_dir = data_dir or self.data_dir

    def connection(self) -> Connection:
        return resolve_connection(self.url, self.key, self.data_dir)

    def client(self, on_close: Callable[[Callable[[], None]], object]) -> Client:
        """The client, made on first use; ``on_close`` registers its closing."""
        if self._client is None:
            found = self.connection()
            if not found.api_key:
                fail("no API key: pass --key or set DRTRAIN_API_KEY (a server's operator makes "
                     "one with `drtrain keys create`); on your own machine `drtrain up` "
                     f"writes one to {found.data_dir / 'api-key'}")
            self._client = make_client(self.url, self.key, self.data_dir)
            on_close(self._client.close)
        return self._client


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"drtrain {version('drtrain')}")
        raise typer.Exit()


Version = Annotated[bool, typer.Option(
    "--version", is_eager=True, callback=_print_version,
    help="Print the installed drtrain's version and exit.")]


def root_callback(ctx: typer.Context, url: Url = None, key: Key = None,
                  data_dir: DataDir = None, show_version: Version = False) -> None:
    # No docstring on purpose: typer would show it instead of the app's help.
    ctx.obj = ClientOptions(url=url, key=key, data_dir=data_dir)


def options(ctx: typer.Context) -> ClientOptions:
    return ctx.ensure_object(ClientOptions)


@contextmanager
def session(ctx: typer.Context) -> Iterator[Client]:
    """The client for a command's body; client errors become a message and an exit code."""
    try:
        yield options(ctx).client(ctx.find_root().call_on_close)
    except UnreachableError as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except ClientError as exc:
        fail(str(exc))


_CONNECTION_PARAMS = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=annotation)
                      for name, annotation in (("url", Url), ("key", Key), ("data_dir", DataDir))]


def client_command(app: typer.Typer, name: str, **kwargs: Any) -> Callable[[F], F]:
    """``app.command(name)`` that also accepts ``--url/--key/--data-dir`` after the command.
    The command must take ``ctx: typer.Context`` (typer passes every parameter by name)."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def command(*, url: str | None = None, key: str | None = None,
                    data_dir: Path | None = None, **rest: Any) -> Any:
            options(rest["ctx"]).override(url, key, data_dir)
            return fn(**rest)

        own = inspect.signature(fn, eval_str=True)
        if "ctx" not in own.parameters:
            raise TypeError(f"client command {fn.__name__} must take ctx: typer.Context")
        signature = own.replace(parameters=[*own.parameters.values(), *_CONNECTION_PARAMS])
        # typer reads both; evaluated annotations, as fn's strings would not resolve here.
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        app.command(name, **kwargs)(command)
        return fn
    return decorate
