"""``drtrain datasets upload|list|get|delete``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from drtrain_cli.commands import ids
from drtrain_cli.commands.context import client_command, session
from drtrain_cli.commands.output import (
    AsJson,
    console,
    err_console,
    kv_table,
    print_json,
    say,
    shown,
    table,
    transfer_bar,
)

app = typer.Typer(help="Upload, list and delete datasets.", no_args_is_help=True)

DatasetId = Annotated[str, typer.Argument(metavar="ID", help="A dataset id or its unique start.")]


@client_command(app, "upload")
def upload(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False,
                                         readable=True, help="CSV, NPZ or gzipped IDX images.")],
    name: Annotated[str | None, typer.Option(help="Name (default: the file name).")] = None,
    label_column: Annotated[str, typer.Option(help="CSV column holding the class.")] = "label",
    side_info_column: Annotated[str | None, typer.Option(
        help="CSV column grouping samples for DR instead of the labels.")] = None,
    labels_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="IDX labels file (with IDX images).")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until the server has checked the file (ready, or the "
                                 "reason it failed); --no-wait returns once it is accepted.")
    ] = True,
    as_json: AsJson = False,
) -> None:
    """Upload a dataset file (streamed, never read whole; a progress bar on a terminal).
    The server accepts it, then checks it; by default this waits for the check."""
    with session(ctx) as client:
        with transfer_bar(f"upload {file.name}") as progress:
            ds = client.upload_dataset(file, name=name, label_column=label_column,
                                       side_info_column=side_info_column,
                                       labels_file=labels_file, progress=progress, wait=False)
        if wait and ds.get("status") == "validating":
            with err_console.status("checking the file on the server"):
                ds = client.wait_dataset(str(ds["id"]))
    if as_json:
        return print_json(ds)
    ident = f"[bold]{shown(ds.get('id'))}[/] ({shown(ds.get('name'))})"
    if ds.get("status") == "validating":
        return say(f"uploaded dataset {ident}: the server is checking it; "
                   f"`drtrain datasets get {shown(ds.get('id'))}` shows when it is ready")
    say(f"uploaded dataset {ident}"
        f": {shown(ds.get('n_samples'))} samples x {shown(ds.get('n_features'))} features, "
        f"{shown(ds.get('n_classes'))} classes, visible units "
        f"{shown(ds.get('visible_units_hint'))}")
    n = ds.get("n_samples")
    partial = [f"{shown(ds.get(key))} of {shown(n)} rows {what}"
               for key, what in (("n_labelled", "labelled"), ("n_with_side", "with a side value"))
               if ds.get(key) is not None and ds.get(key) != n]
    if partial:
        say("  " + "; ".join(partial))


@client_command(app, "list")
def list_(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List your datasets and the built-in ones."""
    with session(ctx) as client:
        items = client.list_datasets()
    if as_json:
        return print_json(items)
    # labelled rows and rows with a side value: what fine-tuning and DR get, with few labels
    columns = ("id", "name", "status", "n_samples", "n_labelled", "n_with_side", "n_features",
               "n_classes")
    console.print(table(["id", "name", "status", "samples", "labelled", "with side", "features",
                         "classes"],
                        drop=("features", "classes", "with side", "labelled", "samples"), rows=[
                            [ds.get(c, "ready") if c == "status" else ds.get(c) for c in columns]
                            for ds in items]))


@client_command(app, "get")
def get(ctx: typer.Context, dataset_id: DatasetId, as_json: AsJson = False) -> None:
    """Show one dataset's summary."""
    with session(ctx) as client:
        ds = client.get_dataset(ids.dataset(client, dataset_id))
    if as_json:
        return print_json(ds)
    console.print(kv_table({k: v if not isinstance(v, (dict, list)) else json.dumps(v)
                            for k, v in ds.items()}))


@client_command(app, "delete")
def delete(ctx: typer.Context, dataset_id: DatasetId) -> None:
    """Delete a dataset (refused while an active job uses it)."""
    with session(ctx) as client:
        full_id = ids.dataset(client, dataset_id)
        client.delete_dataset(full_id)
    say(f"deleted dataset {shown(full_id)}")
