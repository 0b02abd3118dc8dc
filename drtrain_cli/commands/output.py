"""What every client command shares for output: consoles, the one-line failure, JSON, tables,
and progress bars for transfers.

A failure is one line on stderr and an exit code, never a traceback: 1 for an error answer
or a job that did not succeed, 2 for bad arguments or input files, 3 when the server cannot
be reached.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

console = Console()
err_console = Console(stderr=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer (for scripts).")]

# C0 (newline and tab included: a value is one cell, one line), DEL and C1: what a terminal
# acts on instead of showing (ESC starts CSI and OSC sequences; 0x9b is CSI on its own).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``): a string
    from the server (a class label, a name, a reason) can never move the cursor, recolour,
    retitle or clear the terminal, or ring its bell."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def shown(value: Any) -> str:
    """A value as rich markup shows it: printable, and its brackets not read as markup. Every
    value a command prints goes through here (tables, key-value tables, lines, failures)."""
    return escape(printable(str(value)))


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


def confirm(question: str, yes: bool) -> None:
    """Go on only when ``yes`` or the user answers y; else exit 1 with nothing done (no
    terminal to ask: nothing done either)."""
    if yes:
        return
    try:
        agreed = typer.confirm(printable(question), default=False, err=True)
    except typer.Abort:  # no answer (end of input): end the question's line first
        err_console.print()
        agreed = False
    if not agreed:
        fail("nothing done (pass --yes to skip the question)")


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    # A failure may span lines (the client puts each invalid field on a line of its own):
    # each line is made printable on its own, so a newline ends a line rather than showing
    # as an escape.
    lines = "\n".join(shown(line) for line in message.split("\n"))
    err_console.print(f"[bold red]error:[/] {lines}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def say(text: str) -> None:
    """A plain line for people (rich markup allowed; values must go through ``shown``)."""
    console.print(printable(text), highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """One warning line on stderr (so --json and --csv output stay clean)."""
    err_console.print(f"[yellow]warning:[/] {shown(text)}", highlight=False, soft_wrap=True)


def none_found(text: str) -> None:
    """Said on stderr instead of a table with no rows (stdout stays empty, for scripts)."""
    err_console.print(shown(text), highlight=False, soft_wrap=True)


def warn_about(job: dict[str, Any]) -> None:
    """The job's warnings, one line each, on stderr."""
    for text in job.get("warnings") or []:
        warn(text)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else str(value))


def when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


def percent(value: Any, digits: int = 0) -> str:
    return f"{100 * float(value or 0):.{digits}f}%"


def where(job: dict[str, Any]) -> str:
    """Where training is: ``finetune layer 1 epoch 3``."""
    parts = [str(job["phase"])] if job.get("phase") else []
    if job.get("layer") is not None:
        parts.append(f"layer {job['layer']}")
    if job.get("epoch") is not None:
        parts.append(f"epoch {job['epoch']}")
    return " ".join(parts)


def table(headers: list[str], rows: list[list[Any]], *, keep: int = 1,
          title: str | None = None, drop: Sequence[str] = ()) -> Table:
    """A table whose first ``keep`` columns (ids, which people copy) are never wrapped or
    shortened. On a terminal too narrow for every column, the columns named in ``drop`` are
    left out, in that order, until the others fit; a cell is never cut short with "…" (a
    word too long for its column folds onto the next line)."""
    cells = [[shown(num(v)) for v in row] for row in rows]
    columns = list(range(len(headers)))
    for name in (None, *drop):
        if name is not None:
            columns.remove(headers.index(name))
        result = _table([headers[i] for i in columns], [[row[i] for i in columns]
                                                        for row in cells], keep, title)
        if _natural_width(result) <= console.width:
            break
    return result


def _natural_width(table: Table) -> int:
    """The width the table takes with no cell folded: ``console.measure`` caps its answer
    at the terminal's width, so it never says that a table is too wide."""
    options = console.options.update_width(10**6)
    return Measurement.get(console, options, table).maximum


def _table(headers: list[str], cells: list[list[str]], keep: int, title: str | None) -> Table:
    result = Table(title=None if title is None else shown(title), box=box.SIMPLE_HEAD)
    for i, header in enumerate(map(shown, headers)):
        if i < keep:
            width = max([len(header), *(len(row[i]) for row in cells)])
            result.add_column(header, no_wrap=True, min_width=width, overflow="fold")
        else:
            result.add_column(header, overflow="fold")
    for row in cells:
        result.add_row(*row)
    return result


def kv_table(rows: dict[str, Any], title: str | None = None) -> Table:
    result = Table(show_header=False, title=None if title is None else shown(title), box=None)
    result.add_column(style="bold")
    result.add_column()
    for name, value in rows.items():
        result.add_row(shown(name), shown(num(value)))
    return result


@contextmanager
def transfer_bar(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback for ``Client`` uploads and downloads: a bar on stderr when it is a
    terminal (so ``--json`` on stdout stays clean), nothing otherwise."""
    if not err_console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True) as progress:
        task = progress.add_task(shown(description), total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
