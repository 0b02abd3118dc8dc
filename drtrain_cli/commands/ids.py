"""Ids as people type them: a full id is used as given (hex in capitals as the same id in
small letters); anything shorter is matched against the list of ids as a prefix of at least
``MIN_PREFIX`` characters, which must name exactly one (no match: exit 1, several or too short:
exit 2)."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from drtrain_cli.commands.output import EXIT_ERROR, EXIT_USAGE, fail
from drtrain_client import Client

# The server's ids are uuid4 hex; such an argument needs no listing to be recognised.
_FULL_ID = re.compile(r"[0-9a-f]{32}")
# Hex typed (or pasted) in capitals names the same id.
_HEX = re.compile(r"[0-9a-fA-F]+")
_SHOWN = 5
# Shorter starts name the wrong id too easily (`jobs delete 3` would take any job whose id
# starts with 3 while it is the only one).
MIN_PREFIX = 4


def job(client: Client, text: str) -> str:
    return match("job", text, lambda: (j["id"] for j in client.list_jobs(page_size=200)))


def dataset(client: Client, text: str) -> str:
    return match("dataset", text, lambda: (d["id"] for d in client.list_datasets()))


def sweep(client: Client, text: str) -> str:
    return match("sweep", text, lambda: (s["id"] for s in client.list_sweeps(page_size=200)))


def checkpoint(client: Client, job_id: str, text: str) -> str:
    return match("checkpoint", text, lambda: (c["id"] for c in client.checkpoints(job_id)))


def match(kind: str, text: str, candidates: Callable[[], Iterable[str]]) -> str:
    """The one id that is ``text`` or starts with it."""
    if not text:
        fail(f"an empty {kind} id", EXIT_USAGE)
    if _HEX.fullmatch(text):
        text = text.lower()
    if _FULL_ID.fullmatch(text):
        return text
    every = list(candidates())
    if text in every:
        return text
    if len(text) < MIN_PREFIX:
        fail(f"{text!r} is too short to name a {kind}: type at least {MIN_PREFIX} characters "
             "of its id", EXIT_USAGE)
    found = [candidate for candidate in every if candidate.startswith(text)]
    if not found:
        fail(f"no {kind} id starts with {text!r}", EXIT_ERROR)
    if len(found) > 1:
        shown = ", ".join(found[:_SHOWN]) + (", ..." if len(found) > _SHOWN else "")
        fail(f"{text!r} is the start of {len(found)} {kind} ids ({shown}); type more of it",
             EXIT_USAGE)
    return found[0]
