"""API memory for a large JSON body sent with no Authorization header, in embedded mode.

    .venv/bin/python -m bench.unauth_body [--mib 64] [--before CHECKOUT]

For each path (``/v1/jobs/{id}/predict``, ``/v1/jobs``) one API process (uvicorn, as
``drtrain up`` starts it) gets one ``--mib`` MiB JSON body without a key; printed: the
answer's status, the API's RSS before, its peak (VmHWM) and its RSS after, and the slowest
``/healthz`` answer while the body was sent. ``--before`` serves another checkout of the same
schema (e.g. ``git worktree add /tmp/before <commit>``) in the same run, for a before/after.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.service_stack import ROOT, Stack, rss_bytes, status_bytes

MIB = 1024 * 1024
CHUNK = 256 * 1024


def vm_hwm_bytes(pid: int) -> int:
    return status_bytes(pid, "VmHWM")


def send_body(url: str, path: str, size: int) -> int:
    """POST ``size`` bytes of a JSON array of numbers, no key; the answer's status (0: the
    server closed the connection before answering)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=120) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {size}\r\n"
                      "Connection: close\r\n\r\n").encode())
        unit = b"0.5," * (CHUNK // 4)
        sent = 0
        try:
            sock.sendall(b"[")
            sent = 1
            while sent < size - 4:
                piece = unit[:min(CHUNK, size - 4 - sent)]
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"0.5]"[: size - sent])
        except OSError:
            pass  # answered and closed before the body was all sent: what a gate does
        reply = b""
        try:
            while b"\r\n" not in reply:
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
        except OSError:
            pass
    head = reply.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 else 0


def time_health(url: str, stop: threading.Event, times: list[float]) -> None:
    """``/healthz`` answer times, until ``stop``."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(f"{url}/healthz")
            times.append(time.perf_counter() - t0)
            time.sleep(0.05)


def measure(source: Path, mib: int) -> list[str]:
    lines = []
    for path in ("/v1/jobs/0123456789abcdef0123456789abcdef/predict", "/v1/jobs"):
        with tempfile.TemporaryDirectory() as tmp:
            stack = Stack("embedded", Path(tmp), source=source)
            try:
                url = stack.start_api()
                pid = stack.pid("api")
                time.sleep(1)
                before = rss_bytes(pid)
                stop = threading.Event()
                health: list[float] = []
                poller = threading.Thread(target=time_health, args=(url, stop, health))
                poller.start()
                time.sleep(0.5)  # the poller's first answers, before the body
                status = send_body(url, path, mib * MIB)
                time.sleep(1)
                stop.set()
                poller.join()
                lines.append(f"{source.name or source}: POST {path.split('/')[-1] or path} "
                             f"{mib} MiB, no key -> {status}; API RSS {before / MIB:.0f} MiB "
                             f"before, peak {vm_hwm_bytes(pid) / MIB:.0f} MiB, "
                             f"{rss_bytes(pid) / MIB:.0f} MiB after; slowest /healthz "
                             f"{max(health, default=float('nan')) * 1000:.0f} ms "
                             f"of {len(health)}")
            finally:
                stack.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--before", type=Path, help="another checkout to measure first")
    args = parser.parse_args()
    for source in ([args.before] if args.before else []) + [ROOT]:
        for line in measure(source.resolve(), args.mib):
            print(line, flush=True)


if __name__ == "__main__":
    main()
