"""Where the client finds the server and key: argument, environment, data folder, default."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from drtrain_client import DEFAULT_URL, Client, ClientError, resolve_connection


def folder(root: Path, url: str | None = None, key: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if url is not None:
        (root / "url").write_text(url + "\n")
    if key is not None:
        (root / "api-key").write_text(key + "\n")
    return root


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DRTRAIN_URL", "DRTRAIN_API_KEY", "DRTRAIN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_argument_wins_over_environment_and_folder(tmp_path: Path) -> None:
    data = folder(tmp_path / "d", url="http://file:1", key="drt_file")
    env = {"DRTRAIN_URL": "http://env:2", "DRTRAIN_API_KEY": "drt_env"}
    found = resolve_connection("http://arg:3/", "drt_arg", data, env=env)
    assert (found.url, found.api_key) == ("http://arg:3", "drt_arg")
    assert (found.url_from, found.key_from) == ("argument", "argument")


def test_the_environment_wins_over_the_folder(tmp_path: Path) -> None:
    data = folder(tmp_path / "d", url="http://file:1", key="drt_file")
    env = {"DRTRAIN_URL": "http://env:2", "DRTRAIN_API_KEY": "drt_env"}
    found = resolve_connection(data_dir=data, env=env)
    assert (found.url, found.api_key) == ("http://env:2", "drt_env")
    assert (found.url_from, found.key_from) == ("DRTRAIN_URL", "DRTRAIN_API_KEY")


def test_the_folder_wins_over_the_default(tmp_path: Path) -> None:
    data = folder(tmp_path / "d", url="http://file:1", key="drt_file")
    found = resolve_connection(data_dir=data, env={})
    assert (found.url, found.api_key) == ("http://file:1", "drt_file")
    assert found.url_from == str(data / "url") and found.key_from == str(data / "api-key")


def test_nothing_anywhere_gives_the_default_url_and_no_key(tmp_path: Path) -> None:
    found = resolve_connection(env={})
    assert (found.url, found.api_key, found.url_from, found.key_from) == (
        DEFAULT_URL, None, "default", None)
    assert found.data_dir == Path(".drtrain")


def test_each_value_is_resolved_on_its_own(tmp_path: Path) -> None:
    # The key may come from the folder while the URL comes from the environment.
    data = folder(tmp_path / "d", key="drt_file")
    found = resolve_connection(data_dir=data, env={"DRTRAIN_URL": "http://env:2"})
    assert (found.url, found.api_key) == ("http://env:2", "drt_file")


def test_blank_values_count_as_not_given(tmp_path: Path) -> None:
    data = folder(tmp_path / "d", url="  ", key="drt_file")
    found = resolve_connection("", " ", data, env={"DRTRAIN_URL": "", "DRTRAIN_API_KEY": ""})
    assert (found.url, found.api_key) == (DEFAULT_URL, "drt_file")


def test_the_data_folder_is_argument_then_environment_then_dot_drtrain(tmp_path: Path) -> None:
    folder(tmp_path / ".drtrain", url="http://dot:1")
    env_dir = folder(tmp_path / "env", url="http://env-dir:2")
    arg_dir = folder(tmp_path / "arg", url="http://arg-dir:3")
    env = {"DRTRAIN_DATA_DIR": str(env_dir)}
    assert resolve_connection(data_dir=arg_dir, env=env).url == "http://arg-dir:3"
    assert resolve_connection(env=env).url == "http://env-dir:2"
    assert resolve_connection(env={}).url == "http://dot:1"


def test_an_unreadable_file_is_a_client_error(tmp_path: Path) -> None:
    (folder(tmp_path / "d") / "api-key").mkdir()
    with pytest.raises(ClientError, match="cannot read .*api-key"):
        resolve_connection(data_dir=tmp_path / "d", env={})


def test_client_without_arguments_resolves_the_same_way(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    folder(tmp_path / ".drtrain", url="http://file:1", key="drt_file")
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_page_token": None})

    with Client(transport=httpx.MockTransport(record)) as c:
        assert c.base_url == "http://file:1" and c.list_datasets() == []
    monkeypatch.setenv("DRTRAIN_API_KEY", "drt_env")
    with Client(transport=httpx.MockTransport(record)) as c:
        c.list_datasets()
    with Client("http://arg:3", transport=httpx.MockTransport(record)) as c:
        c.list_datasets()
    assert [(str(r.url), r.headers["authorization"]) for r in seen] == [
        ("http://file:1/v1/datasets", "Bearer drt_file"),
        ("http://file:1/v1/datasets", "Bearer drt_env"),
        ("http://arg:3/v1/datasets", "Bearer drt_env")]
