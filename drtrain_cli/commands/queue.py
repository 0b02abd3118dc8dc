"""``drtrain queue``: the tenant's queue, the jobs waiting behind its running cap (the server's
``DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT``), and what a job's place in it reads as."""
from __future__ import annotations

from typing import Annotated, Any

import typer

from drtrain_cli.commands.context import session
from drtrain_cli.commands.output import AsJson, console, kv_table, print_json, say, table
from drtrain_client import Client, waiting_for_slot


def show_queue(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=0, max=1000,
                                       help="List at most this many waiting jobs.")] = 50,
    as_json: AsJson = False,
) -> None:
    """The tenant's queue: running slots in use, and the jobs waiting for one, next first."""
    with session(ctx) as client:
        queue = client.queue(limit=limit)
    if as_json:
        return print_json(queue)
    console.print(kv_table({
        "running slots": _slots(queue.get("dispatched"), queue.get("running_limit")),
        "waiting": f"{queue.get('waiting')} (at most {queue.get('queued_limit')} may wait)"}))
    items = queue.get("items") or []
    if items:
        console.print(table(["position", "job"], [[i.get("position"), i.get("job_id")]
                                                  for i in items], keep=2))
    hidden = int(queue.get("waiting") or 0) - len(items)
    if hidden > 0:
        say(f"… and {hidden} more (--limit to list them)")


def _slots(dispatched: Any, limit: Any) -> str:
    """Slots in use against the cap. More in use than the cap allows happens once a cap is
    lowered: the jobs running keep their slots until they end."""
    text = f"{dispatched} of {limit} in use"
    if isinstance(dispatched, int) and isinstance(limit, int) and dispatched > limit:
        text += " (over a lowered cap: the jobs running keep their slots until they end)"
    return text


def queue_state(job: dict[str, Any]) -> str | None:
    """What a queued job waits for: a running slot (it is in the tenant's queue), or a worker
    (it holds a slot and is next in the broker). None for a job that is not queued, and for
    one of a server from before the queue (no ``dispatched_at``), which says neither."""
    if job.get("status") != "queued" or "dispatched_at" not in job:
        return None
    return "waiting for a running slot" if waiting_for_slot(job) else "waiting for a worker"


def queue_line(client: Client, job: dict[str, Any]) -> str | None:
    """``queue_state`` for ``jobs get``, with the job's place while it waits for a slot. None
    for a job that is not queued, or that left the queue between the two reads."""
    state = queue_state(job)
    if state is None or not waiting_for_slot(job):
        return state
    queue = client.queue(limit=0, job_id=str(job["id"]))
    if queue.get("position") is None:
        return None
    return f"{state}: position {queue['position']} of {queue.get('waiting')}"
