"""Job event streams (SSE) that cost the database the same whatever the number of watchers.

One ``JobFeed`` per job polls the database (one short session per poll, no connection held
in between) and keeps the newest metric frames and the job's status in memory; every stream
of that job is a subscriber that reads from it. A subscriber behind the feed's memory (a new
stream with a long backlog, or a ``Last-Event-ID`` far back) catches up from the database in
pages of ``PAGE`` points, each in its own short session. An idle stream holds no connection
and costs nothing but its socket; a keep-alive comment goes out when nothing else has for
``keepalive_seconds``. The feed stops when its last subscriber leaves or after the job's
terminal status (sent last, after every metric point).

What 500 watchers of one job cost: every stream sleeps on the feed's one event
with no timer of its own, and the feed wakes them only when a poll changed something (new
points, a new status) or, once per ``keepalive_seconds`` of silence, for a keep-alive; a poll
that found nothing wakes nobody. Each wake-up is one write per stream of bytes joined and
encoded once for all the streams at the same cursor, status frame included.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from api.deps import shared_call
from api.http import sse_frame
from api.job_reads import JobReads
from api.reads import JOB_NAMES, job_body, point_jsons
from drtrain.jobs import views
from drtrain.kit.db import raw_reader
from drtrain.kit.errors import NotFound, Unauthorized
from drtrain.kit.models import JobStatus

log = logging.getLogger(__name__)

PAGE = 500  # metric points per database read, for the feed and for catching up
WINDOW = 2000  # metric frames a feed keeps for its subscribers (up to twice this, briefly)

Frames = list[tuple[int, str]]
KEEPALIVE = b": keep-alive\n\n"
# The last frame of a stream whose key was revoked while it was open (docs/api.md).
REVOKED = sse_frame("error", json.dumps({
    "type": Unauthorized.type_, "title": Unauthorized.title, "status": Unauthorized.status,
    "detail": "the API key was revoked; the stream is closed"})).encode()


@dataclass(frozen=True)
class KeyCheck:
    """How a stream checks that its caller's key still holds (``api.deps.key_still_valid``),
    and how often at least while nothing is sent."""

    valid: Callable[[], Awaitable[bool]]
    every: float


def _frames(columns: list[Sequence[Any]]) -> Frames:
    """Metric points (``drtrain.jobs.views.metric_columns``) as SSE frames, id = seq."""
    return [(seq, sse_frame("metric", point.decode(), seq))
            for seq, point in zip(columns[0], point_jsons(columns), strict=True)]


Polled = tuple[str, bool, Frames, int | None]


def _poll(factory: sessionmaker[Session], tenant_id: str, job_id: str,
          after: int | None) -> Polled:
    """The job (its JSON, and whether its status is terminal), then (read after it, so a
    terminal status implies every earlier point is visible) its points after ``after``; on
    the first poll only the last seq."""
    with raw_reader(factory) as raw:
        job = views.job(raw, tenant_id, job_id, JOB_NAMES)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if after is None:
            last, columns = views.last_seq(raw, job_id), None
        else:
            last, columns = None, views.metric_columns(raw, job_id, after, PAGE)
    terminal = JobStatus(job["status"]).terminal
    return job_body(job).decode(), terminal, [] if columns is None else _frames(columns), last


def _page(factory: sessionmaker[Session], job_id: str, after: int) -> Frames:
    with raw_reader(factory) as raw:
        return _frames(views.metric_columns(raw, job_id, after, PAGE))


def _exists(factory: sessionmaker[Session], tenant_id: str, job_id: str) -> None:
    with raw_reader(factory) as raw:
        if not views.job_exists(raw, tenant_id, job_id):
            raise NotFound(f"job {job_id} not found")


class JobFeed:
    """The shared state of one job's streams, refreshed by one poller task."""

    def __init__(self, reads: JobReads, tenant_id: str, job_id: str, poll_seconds: float,
                 keepalive_seconds: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reads, self.tenant_id, self.job_id = reads, tenant_id, job_id
        self.poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self._clock = clock
        self.announced_at = clock()  # the last wake-up of the subscribers
        self.ticks = 0  # keep-alive wake-ups so far: a subscriber woken by one sends a comment
        self.status: str | None = None  # the job's JSON, once every point before it is held
        self.status_frame = b""  # the same as an SSE frame, encoded once for every watcher
        self.high = 0  # the highest seq fetched
        self.ended = False  # terminal status held and every point before it fetched
        self.gone = False  # the job no longer exists
        self.seqs: list[int] = []
        self.frames: list[str] = []
        self.subscribers = 0
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()  # replaced after every change; waiters hold the old one
        self.task: asyncio.Task[None] | None = None
        # Watchers that are caught up share one cursor: their next chunk (with the status
        # frame, when they have not sent the current one) is joined and encoded once per
        # change, not once per watcher.
        self._chunks: dict[tuple[int, bool], tuple[bytes, int]] = {}

    def floor(self) -> int:
        """Subscribers at or past this seq are served from memory, others from the database."""
        return self.seqs[0] - 1 if self.seqs else self.high

    def chunk_after(self, cursor: int, with_status: bool = False) -> tuple[bytes, int]:
        """The metric frames after ``cursor`` as one encoded chunk (then the status frame,
        when ``with_status``: it follows the points it comes after), and the new cursor."""
        key = (cursor, with_status)
        hit = self._chunks.get(key)
        if hit is None:
            i = bisect_right(self.seqs, cursor)
            body = "".join(self.frames[i:]).encode()
            hit = self._chunks[key] = (body + self.status_frame if with_status else body,
                                       self.seqs[-1] if i < len(self.seqs) else cursor)
        return hit

    def _announce(self) -> None:
        self._chunks = {}
        self.ready.set()
        self.announced_at = self._clock()
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def _keepalive_due(self) -> None:
        """Wake the subscribers for a keep-alive when the next poll would come after
        ``keepalive_seconds`` of silence (the poll interval is this check's resolution)."""
        if (self.ready.is_set() and self._clock() - self.announced_at
                >= self.keepalive_seconds - self.poll_seconds):
            self.ticks += 1
            self._announce()

    def _keep(self, frames: Frames) -> None:
        for seq, frame in frames:
            self.seqs.append(seq)
            self.frames.append(frame)
        if len(self.seqs) > 2 * WINDOW:
            del self.seqs[:-WINDOW], self.frames[:-WINDOW]
        if frames:
            self.high = frames[-1][0]

    async def run(self) -> None:
        after: int | None = None
        while True:
            try:
                status, terminal, frames, last = await self.reads.run(
                    partial(_poll, tenant_id=self.tenant_id, job_id=self.job_id, after=after))
            except NotFound:
                self.gone = self.ended = True
                self._announce()
                return
            except Exception:  # noqa: BLE001 - a database hiccup must not end 500 streams
                log.warning("event feed of job %s: poll failed; retrying", self.job_id,
                            exc_info=True)
                self._keepalive_due()
                await anyio.sleep(self.poll_seconds)
                continue
            if last is not None:
                # The first poll: start the window up to WINDOW points back, so the watchers
                # of a job with a backlog are served from memory, not each from the database.
                after = self.high = max(0, last - WINDOW)
                continue
            self._keep(frames)
            more = len(frames) == PAGE
            changed = bool(frames)
            # While a backlog is still being fetched, hold the status back: a terminal one
            # must come after every point.
            if not more:
                if status != self.status:
                    self.status, self.status_frame = status, sse_frame("status", status).encode()
                    changed = True
                self.ended = terminal
            after = self.high
            # Watchers start once the window is filled; after that, only a poll that found
            # something new wakes them.
            if (not more or self.ready.is_set()) and (changed or not self.ready.is_set()
                                                      or self.ended):
                self._announce()
            if self.ended:
                return
            if not more:
                self._keepalive_due()
                await anyio.sleep(self.poll_seconds)


class EventHub:
    """Every job feed of this API process, and the streams subscribed to them."""

    def __init__(self, *, poll_seconds: float, keepalive_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self.feeds: dict[tuple[str, str], JobFeed] = {}
        self._checks: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._clock = clock

    def watching(self, tenant_id: str, job_id: str) -> bool:
        """Whether this tenant's job is known to exist: a live feed has read it."""
        feed = self.feeds.get((tenant_id, job_id))
        return feed is not None and feed.ready.is_set() and not feed.gone

    async def check_exists(self, reads: JobReads, tenant_id: str, job_id: str) -> None:
        """NotFound unless this tenant has the job, before a stream opens. A live feed knows;
        otherwise one read answers every stream of the job opening meanwhile (500 watchers
        connecting at once to a job nobody watched yet cost one query, not 500)."""
        if self.watching(tenant_id, job_id):
            return
        await shared_call(self._checks, (tenant_id, job_id),
                          lambda: reads.run(partial(_exists, tenant_id=tenant_id,
                                                    job_id=job_id)))

    def _attach(self, reads: JobReads, tenant_id: str, job_id: str) -> JobFeed:
        feed = self.feeds.get((tenant_id, job_id))
        if feed is None or (feed.task is not None and feed.task.done()):
            feed = self.feeds[(tenant_id, job_id)] = JobFeed(
                reads, tenant_id, job_id, self.poll_seconds, self.keepalive_seconds, self._clock)
            feed.task = asyncio.get_running_loop().create_task(feed.run())
        feed.subscribers += 1
        return feed

    def _detach(self, feed: JobFeed) -> None:
        feed.subscribers -= 1
        if feed.subscribers > 0:
            return
        if feed.task is not None:
            feed.task.cancel()
        if self.feeds.get((feed.tenant_id, feed.job_id)) is feed:
            del self.feeds[(feed.tenant_id, feed.job_id)]

    async def stream(self, reads: JobReads, tenant_id: str, job_id: str,
                     after_seq: int = 0, key: KeyCheck | None = None) -> AsyncIterator[bytes]:
        """SSE frames: metric points after ``after_seq`` (id = seq), a status frame whenever
        the job changes, keep-alive comments when idle; ends after the terminal status.
        Everything due at one wake-up goes out as one chunk (one write, not one per frame).
        Between wake-ups a stream waits on the feed: the feed wakes it for changes and for
        keep-alives. With ``key``, the caller's key is checked again before every chunk and
        at least every ``key.every`` seconds while idle; once it no longer holds (revoked),
        the stream ends with an ``error`` frame (``REVOKED``)."""
        feed = self._attach(reads, tenant_id, job_id)
        try:
            while not feed.ready.is_set():
                with anyio.move_on_after(self.keepalive_seconds):
                    await feed.ready.wait()
                if not feed.ready.is_set():
                    if key is not None and not await key.valid():
                        yield REVOKED
                        return
                    yield KEEPALIVE
            cursor, sent_status, ticks = after_seq, b"", feed.ticks
            while True:
                changed = feed.changed  # taken first: a change while we send is not missed
                sent = False
                if key is not None and not await key.valid():
                    yield REVOKED
                    return
                while cursor < feed.floor() and not feed.gone:
                    rows = await reads.run(partial(_page, job_id=job_id, after=cursor))
                    if rows:
                        cursor, sent = rows[-1][0], True
                        yield "".join(frame for _, frame in rows).encode()
                    if len(rows) < PAGE:
                        break
                with_status = (bool(feed.status_frame) and feed.status_frame is not sent_status
                               and not feed.gone)
                chunk, cursor = feed.chunk_after(cursor, with_status)
                if with_status:
                    sent_status = feed.status_frame
                if chunk:
                    sent = True
                    yield chunk
                if feed.gone or (feed.ended and cursor >= feed.high):
                    return
                if feed.ticks != ticks and not sent:
                    yield KEEPALIVE
                ticks = feed.ticks
                if not await _wait(changed, key):
                    yield REVOKED
                    return
        finally:
            self._detach(feed)


async def _wait(changed: asyncio.Event, key: KeyCheck | None) -> bool:
    """Until the feed changes (True), checking ``key`` every ``key.every`` seconds meanwhile;
    False once it no longer holds."""
    if key is None:
        await changed.wait()
        return True
    while True:
        with anyio.move_on_after(key.every):
            await changed.wait()
            return True
        if not await key.valid():
            return False


class EventStreamResponse(StreamingResponse):
    """A streaming response that gives back its slot (the tenant's stream cap) however the
    stream ends: finished, client gone, or never started."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # Only the server cancels a request's task: at shutdown, once its grace for open
            # requests has run out. A stream lasts as long as its job, so one open then is
            # expected, and its end is no error worth a traceback in the API's log.
            log.info("an event stream was closed by the server's shutdown")
        finally:
            self._release()
