"""``drtrain up``: the API and N Celery workers as child processes, all on this machine.

SQLite in the data folder, objects in ``<data-dir>/objects``, Celery's filesystem transport in
``<data-dir>/broker``. ``up`` binds the port first (a busy port fails before anything starts)
and hands the listening socket to the API. Children run in their own process groups so that a
training process forked by a worker is stopped with it, and so that Ctrl-C reaches them only
through us (in a defined order, with a timeout); they die with ``up`` even when it is killed
hard, and one that exits is restarted with backoff (``drtrain_cli.supervise``).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from drtrain_cli.supervise import Children
from drtrain_client.connection import DEFAULT_DATA_DIR, KEY_FILE, URL_FILE
from worker.argv import worker_argv
from worker.threads import host_cpus, training_threads

START_TIMEOUT_SECONDS = 90.0
LOCAL_TENANT = "local"
# Set explicitly by ``up``: an operator's production URLs in the shell must not leak in.
_EMBEDDED_OVERRIDES = ("DRTRAIN_DATABASE_URL", "DRTRAIN_BROKER_URL", "DRTRAIN_STORAGE_URL",
                       "DRTRAIN_S3_ENDPOINT_URL", "DRTRAIN_S3_ACCESS_KEY_ID",
                       "DRTRAIN_S3_SECRET_ACCESS_KEY")


def _say(text: str) -> None:
    print(text, flush=True)


def child_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _EMBEDDED_OVERRIDES}
    env.update(DRTRAIN_DATA_DIR=str(data_dir), DRTRAIN_ENVIRONMENT="embedded",
               PYTHONUNBUFFERED="1")
    return env


def _write_secret(path: Path, text: str) -> None:
    # Created with 0600 from the start: never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.chmod(path, 0o600)


def workers_env(env: dict[str, str], workers: int) -> dict[str, str]:
    """``env`` for ``workers`` worker processes of one host: unless the operator chose a thread
    count (DRTRAIN_TORCH_THREADS, OMP_NUM_THREADS), each training process gets an equal share
    of the CPUs (worker/threads.py; one worker alone gets them all)."""
    if env.get("DRTRAIN_TORCH_THREADS", "").strip() not in ("", "0"):
        return env  # the operator's (the workers' settings check it)
    threads = training_threads(0, workers, host_cpus(), env)
    return env if threads is None else {**env, "DRTRAIN_TORCH_THREADS": str(threads)}


def write_url(data_dir: Path, url: str) -> Path:
    """``<data-dir>/url``, where clients look for the server (after --url and DRTRAIN_URL).
    Written whole or not at all (temp file, fsync, rename): a client never reads half a URL."""
    path = data_dir / URL_FILE
    tmp = path.with_name(f".{URL_FILE}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(url + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def banner(url: str, key: str, data_dir: Path, workers: int) -> list[str]:
    local = data_dir == (Path.cwd() / DEFAULT_DATA_DIR).resolve()
    finds = ("client commands run in this folder find URL and key by themselves" if local
             else f"client commands find URL and key with --data-dir {data_dir}")
    return [f"drtrain is up at {url}",
            f"dashboard: {url}/   API docs: {url}/docs",
            f"API key: {key}   (also in {data_dir / KEY_FILE})",
            f"data folder: {data_dir}   workers: {workers}   stop with Ctrl-C",
            f"{finds}; in any other shell:",
            f"export DRTRAIN_URL={url}",
            f"export DRTRAIN_API_KEY={key}"]


def ensure_local_key(database_url: str, key_file: Path) -> str:
    """Reuse the key in ``key_file`` while it still opens the database; else make a new one."""
    from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
    from drtrain.tenants.keys import create_key, tenant_for_key

    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            if key_file.exists():
                key = key_file.read_text(encoding="utf-8").strip()
                if key and tenant_for_key(session, key) is not None:
                    os.chmod(key_file, 0o600)
                    return key
            key = create_key(session, LOCAL_TENANT)
    finally:
        engine.dispose()
    _write_secret(key_file, key)
    return key


def prepare(data_dir: Path) -> tuple[Path, str]:
    """Data folder, migrations and the local key; returns (data_dir, key)."""
    from drtrain.kit.migrate import upgrade
    from drtrain.kit.settings import Settings

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data_dir, database_url="", broker_url="", storage_url="",
                        environment="embedded")
    upgrade(settings.resolved_database_url)
    return data_dir, ensure_local_key(settings.resolved_database_url, data_dir / KEY_FILE)


def _wait_healthy(url: str, children: Children, stopping: list[int]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stopping and not children.dead():
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so that a port already in use (another
    ``drtrain up``, anything else) fails now, before anything is started or printed."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restart reuse a port in TIME_WAIT; a socket still listening on it is
        # refused all the same (no SO_REUSEPORT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_embedded(*, host: str, port: int, data_dir: Path, workers: int) -> int:
    """Run until Ctrl-C/SIGTERM (exit 0), or until the port is busy, the service does not
    come up, or a child keeps crashing (exit 1). A child that dies is restarted."""
    try:
        sock = listen(host, port)
    except OSError as exc:
        _say(f"drtrain up: cannot listen on {host}:{port}: {exc.strerror or exc} "
             "(is another drtrain up, or another server, using this port?)")
        return 1
    try:
        return _run(sock, host=host, port=port, data_dir=data_dir, workers=workers)
    finally:
        sock.close()


def _run(sock: socket.socket, *, host: str, port: int, data_dir: Path, workers: int) -> int:
    data_dir, key = prepare(data_dir)
    env = child_env(data_dir)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    children = Children()
    py = sys.executable
    children.start("api", [py, "-m", "drtrain_cli.api_on_socket", str(sock.fileno())], env,
                   Path.cwd(), pass_fds=(sock.fileno(),))
    worker_env = workers_env(env, workers)
    for i in range(workers):
        # --quiet: no Celery banner above ours (the URL and key are what a user needs)
        children.start(f"worker-{i}", [py, "-m", "celery", "-A", "worker.celery_app", "--quiet",
                                       *worker_argv(hostname=f"embedded{i}@%h",
                                                    loglevel="WARNING")], worker_env, Path.cwd())
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        if not _wait_healthy(url, children, stopping):
            if stopping:
                return 0
            dead = children.dead()
            why = ", ".join(f"{n} exited {c}" for n, c in dead) or "API not healthy in time"
            _say(f"drtrain up: failed to start ({why})")
            return 1
        write_url(data_dir, url)
        for line in banner(url, key, data_dir, workers):
            _say(line)
        while not stopping:
            if not children.supervise(_say):
                return 1
            time.sleep(0.5)
        _say("drtrain up: stopping")
        return 0
    finally:
        children.stop()
