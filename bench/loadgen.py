"""A small HTTP/1.1 keep-alive load generator for the service benchmarks.

Each client is one connection sending one request at a time (no pipelining). It parses only
the status line and Content-Length (or chunked framing), so it costs far less per request than
httpx and measures the server rather than itself. ``run`` drives it from a separate process,
so on a small machine the clients and the server do not share one interpreter.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Load:
    """What ``run`` measured: status counts (errors by exception name), per-request seconds."""

    statuses: Counter[int | str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items()
                   if not isinstance(status, int) or status >= 500)


def build_request(method: str, url: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _client(host: str, port: int, requests: list[bytes], stop_at: float, per_client: int,
                  out: Load, index: int, pause: float = 0.0) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sent = 0
    try:
        while time.perf_counter() < stop_at and (per_client <= 0 or sent < per_client):
            request = requests[(index + sent) % len(requests)]
            started = time.perf_counter()
            try:
                writer.write(request)
                status: int | str = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status = type(exc).__name__
                out.statuses[status] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                sent += 1
                continue
            out.latencies.append(time.perf_counter() - started)
            out.statuses[status] += 1
            sent += 1
            if pause:
                await asyncio.sleep(pause)
    finally:
        writer.close()


async def _drive(url: str, requests: list[bytes], concurrency: int, seconds: float,
                 per_client: int, pause: float = 0.0) -> Load:
    parts = urlsplit(url)
    out = Load()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_client(parts.hostname or "127.0.0.1", parts.port or 80, requests,
                                   stop_at, per_client, out, i, pause)
                           for i in range(concurrency)))
    out.seconds = time.perf_counter() - started
    return out


def _child(conn: mp.connection.Connection, url: str, requests: list[bytes], concurrency: int,
           seconds: float, per_client: int, pause: float) -> None:
    conn.send(asyncio.run(_drive(url, requests, concurrency, seconds, per_client, pause)))
    conn.close()


def run(url: str, requests: list[bytes], *, concurrency: int = 16, seconds: float = 5.0,
        per_client: int = 0, pause: float = 0.0, timeout: float = 300.0) -> Load:
    """Send ``requests`` (round-robin) from ``concurrency`` connections for ``seconds`` (or
    ``per_client`` requests each; ``pause`` seconds between a response and the next
    request), from a separate process."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, url, requests, concurrency, seconds,
                                            per_client, pause))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise TimeoutError(f"load generator did not finish in {timeout}s")
        return parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


@dataclass
class Streams:
    """What ``watch`` saw: how many streams opened (200), ended by the server, and bytes."""

    opened: int = 0
    ended: int = 0
    refused: Counter[int | str] = field(default_factory=Counter)
    bytes: int = 0


async def _watch_one(host: str, port: int, request: bytes, out: Streams, stop_at: float) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        out.refused[type(exc).__name__] += 1
        return
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        if status != 200:
            out.refused[status] += 1
            return
        out.opened += 1
        # One deadline for the whole stream, not a wait_for (a task and a timer) per read:
        # 500 watchers share the machine with the API and the training they measure.
        async with asyncio.timeout(max(stop_at - time.perf_counter(), 0)):
            while chunk := await reader.read(65536):
                out.bytes += len(chunk)
            out.ended += 1
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        if not isinstance(exc, TimeoutError):
            out.refused[type(exc).__name__] += 1
    finally:
        writer.close()


async def _watch(url: str, request: bytes, n: int, seconds: float) -> Streams:
    parts = urlsplit(url)
    out = Streams()
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_watch_one(parts.hostname or "127.0.0.1", parts.port or 80, request,
                                      out, stop_at) for _ in range(n)))
    return out


def _watch_child(conn: mp.connection.Connection, url: str, request: bytes, n: int,
                 seconds: float) -> None:
    conn.send(asyncio.run(_watch(url, request, n, seconds)))
    conn.close()


class Watchers:
    """``n`` event-stream clients in a separate process, reading until the server ends each
    stream or ``seconds`` pass; ``result()`` waits for them."""

    def __init__(self, url: str, request: bytes, n: int, seconds: float) -> None:
        ctx = mp.get_context("spawn")
        self._parent, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_watch_child, args=(child, url, request, n, seconds))
        self._proc.start()
        child.close()
        self.seconds = seconds

    def result(self) -> Streams:
        try:
            if not self._parent.poll(self.seconds + 60):
                raise TimeoutError("stream watchers did not finish")
            return self._parent.recv()
        finally:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
