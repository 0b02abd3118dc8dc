"""Where a client finds the server and its API key: one function, used by ``Client()`` and the CLI.

Each value is the first of: what the caller passed, the environment, the data folder that
``drtrain up`` writes (``<data-dir>/url``, ``<data-dir>/api-key``), and (URL only) the default.
The data folder is the caller's, else ``DRTRAIN_DATA_DIR``, else ``.drtrain``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from drtrain_client.errors import ClientError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = Path(".drtrain")
URL_FILE = "url"
KEY_FILE = "api-key"
URL_ENV, KEY_ENV, DATA_DIR_ENV = "DRTRAIN_URL", "DRTRAIN_API_KEY", "DRTRAIN_DATA_DIR"


@dataclass(frozen=True)
class Connection:
    """A resolved server address and key; ``*_from`` says where each came from."""

    url: str
    api_key: str | None
    data_dir: Path
    url_from: str
    key_from: str | None


def resolve_connection(url: str | None = None, api_key: str | None = None,
                       data_dir: str | os.PathLike[str] | None = None, *,
                       env: Mapping[str, str] | None = None) -> Connection:
    """Resolve URL and key in the documented order. Blank values count as not given."""
    env = os.environ if env is None else env
    folder = Path(_given(str(data_dir) if data_dir is not None else None)
                  or _given(env.get(DATA_DIR_ENV)) or DEFAULT_DATA_DIR)
    found_url, url_from = _first([("argument", url), (URL_ENV, env.get(URL_ENV)),
                                  (str(folder / URL_FILE), lambda: _read(folder / URL_FILE))])
    found_key, key_from = _first([("argument", api_key), (KEY_ENV, env.get(KEY_ENV)),
                                  (str(folder / KEY_FILE), lambda: _read(folder / KEY_FILE))])
    return Connection(url=(found_url or DEFAULT_URL).rstrip("/"), api_key=found_key,
                      data_dir=folder, url_from=url_from or "default", key_from=key_from)


def _first(candidates: list[tuple[str, str | None | Callable[[], str | None]]]
           ) -> tuple[str | None, str | None]:
    """The first given value and its source. A file (a callable) is read only when nothing
    before it answered, so a broken file cannot spoil an explicit value."""
    for source, value in candidates:
        text = _given(value() if callable(value) else value)
        if text:
            return text, source
    return None, None


def _given(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
