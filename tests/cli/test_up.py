"""What `drtrain up` tells clients: the URL file, the banner, and which data folder it uses."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drtrain_cli import embedded
from drtrain_cli.main import app
from drtrain_client import resolve_connection


def test_write_url_replaces_the_file_whole(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("http://old:1\n")
    path = embedded.write_url(tmp_path, "http://127.0.0.1:8123")
    assert path == tmp_path / "url" and path.read_text() == "http://127.0.0.1:8123\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["url"]  # no temp file left
    assert resolve_connection(data_dir=tmp_path, env={}).url == "http://127.0.0.1:8123"


class FakeChildren:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped = False

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
              pass_fds: tuple[int, ...] = ()) -> None:
        self.started.append(name)

    def dead(self) -> list[tuple[str, int]]:
        return []

    def supervise(self, say: Any) -> bool:
        return False  # "a child keeps crashing": ends the run right after the banner

    def stop(self) -> None:
        self.stopped = True


def test_up_writes_the_url_once_healthy_and_prints_how_to_reach_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    data_dir = (tmp_path / ".drtrain").resolve()
    data_dir.mkdir()
    children = FakeChildren()
    healthy: list[bool] = []
    monkeypatch.setattr(embedded, "prepare", lambda d: (data_dir, "drt_local"))
    monkeypatch.setattr(embedded, "Children", lambda: children)
    monkeypatch.setattr(embedded, "listen", lambda host, port: socket.socket())
    monkeypatch.setattr(embedded.signal, "signal", lambda *a: None)

    def wait_healthy(url: str, *_: Any) -> bool:
        healthy.append(not (data_dir / "url").exists())  # not written before it is up
        return True

    monkeypatch.setattr(embedded, "_wait_healthy", wait_healthy)
    code = embedded.run_embedded(host="0.0.0.0", port=8123, data_dir=Path(".drtrain"),
                                 workers=2)
    assert code == 1 and children.stopped and healthy == [True]
    assert children.started == ["api", "worker-0", "worker-1"]
    assert (data_dir / "url").read_text() == "http://127.0.0.1:8123\n"
    lines = capsys.readouterr().out.splitlines()
    assert "dashboard: http://127.0.0.1:8123/   API docs: http://127.0.0.1:8123/docs" in lines
    assert "export DRTRAIN_URL=http://127.0.0.1:8123" in lines
    assert "export DRTRAIN_API_KEY=drt_local" in lines
    assert any("run in this folder find URL and key" in line for line in lines)


def test_banner_names_the_data_folder_when_it_is_not_the_local_one(tmp_path: Path) -> None:
    lines = embedded.banner("http://h:1", "drt_k", tmp_path / "elsewhere", 1)
    assert f"client commands find URL and key with --data-dir {tmp_path / 'elsewhere'}" \
        in "\n".join(lines)


@pytest.mark.parametrize(("argv", "expected"), [
    (["up"], Path(".drtrain")),
    (["--data-dir", "g", "up"], Path("g")),
    (["--data-dir", "g", "up", "--data-dir", "own"], Path("own")),
])
def test_up_uses_its_own_data_dir_else_the_global_one(monkeypatch: pytest.MonkeyPatch,
                                                      argv: list[str], expected: Path) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(embedded, "run_embedded", lambda **kw: seen.append(kw) or 0)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert seen[0]["data_dir"] == expected
