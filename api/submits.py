"""How a request submits a job: its submission handed to the app's group commit
(``drtrain.jobs.submit_batch`` on ``drtrain.kit.group_commit``'s threads), the outcome handed
back to the request's event loop. The route and its shortcut (``api/fast_submit.py``) both
call ``Submits.submit``; one object per app (``app.state.submits``), drained at shutdown.
"""
from __future__ import annotations

import asyncio
from typing import Any

from drtrain.jobs.spec import JobSpec
from drtrain.jobs.submit_batch import Submission, commit_submissions
from drtrain.kit.group_commit import GroupCommit
from drtrain.kit.publishing import Publish
from drtrain.kit.settings import Settings

Committed = tuple[Settings, list[str]]  # the jobs one transaction committed


class Submits:
    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self.group: GroupCommit[Submission, Committed] = GroupCommit(
            commit_submissions, _deliver, self._publish_together, name="submits")

    async def submit(self, state: Any, tenant_id: str, spec: JobSpec,
                     idempotency_key: str | None = None) -> Submission:
        """The settled submission (``job`` and ``created``); raises its refusal or error.
        ``state``: the app's (sessionmaker, settings)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        sub = Submission(state.sessionmaker, state.settings, tenant_id, spec,
                         idempotency_key=idempotency_key, token=(loop, future))
        self.group.put(sub)
        await future
        if sub.error is not None:
            raise sub.error
        if sub.job is None:
            raise RuntimeError("a submit was left without an outcome")
        return sub

    def drain(self, timeout: float) -> bool:
        return self.group.drain(timeout)

    def _publish_together(self, committed: list[Committed]) -> None:
        """The jobs of every batch committed since the last publish, together per settings."""
        together: dict[int, Committed] = {}
        for settings, job_ids in committed:
            together.setdefault(id(settings), (settings, []))[1].extend(job_ids)
        for settings, job_ids in together.values():
            self._publish(settings, job_ids)


def _deliver(batch: list[Submission]) -> None:
    """Wakes each submission's request: one call per event loop and batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Submission]] = {}
    for sub in batch:
        by_loop.setdefault(sub.token[0], []).append(sub)
    for loop, subs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake, subs)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _wake(subs: list[Submission]) -> None:
    for sub in subs:
        future: asyncio.Future[None] = sub.token[1]
        if not future.done():
            future.set_result(None)
