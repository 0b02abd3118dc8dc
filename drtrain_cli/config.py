"""How the client commands find the server and the API key.

URL: ``--url``, else ``DRTRAIN_URL``, else the embedded default. Key: ``--key``, else
``DRTRAIN_API_KEY``, else the file ``<data-dir>/api-key`` that ``drtrain up`` writes, where
data-dir is ``--data-dir``, else ``DRTRAIN_DATA_DIR``, else ``.drtrain``. typer reads the
environment variables (``envvar=`` on the options), so this module only handles the file.
"""
from __future__ import annotations

from pathlib import Path

from drtrain_client import Client, ClientError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = Path(".drtrain")
KEY_FILE_NAME = "api-key"


def key_file(data_dir: Path | None) -> Path:
    return (data_dir or DEFAULT_DATA_DIR) / KEY_FILE_NAME


def find_key(key: str | None, data_dir: Path | None) -> str | None:
    """The explicit key if given, else the embedded server's key file, else None."""
    if key:
        return key.strip()
    path = key_file(data_dir)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClientError(f"cannot read the API key from {path}: {exc.strerror}") from exc
    return text or None


def missing_key_message(data_dir: Path | None) -> str:
    return ("no API key: pass --key, set DRTRAIN_API_KEY, or start `drtrain up` "
            f"(it writes {key_file(data_dir)})")


def make_client(url: str, key: str) -> Client:
    """The one place the CLI builds a client; tests replace it to inject a mock transport."""
    return Client(url, key)
