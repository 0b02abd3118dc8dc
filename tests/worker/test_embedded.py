"""`drtrain up`'s preparation: data folder, SQLite migrations and the local key file."""
from __future__ import annotations

import stat

import typer
from typer.testing import CliRunner

from drtrain_cli.embedded import child_env, prepare
from drtrain_cli.main import app


def test_prepare_makes_a_private_key_once_and_reuses_it(tmp_path):
    data_dir, key = prepare(tmp_path / "d")
    key_file = data_dir / "api-key"
    assert key.startswith("drt_") and key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (data_dir / "drtrain.sqlite3").exists()
    assert prepare(tmp_path / "d")[1] == key  # second start: same key

    (data_dir / "drtrain.sqlite3").unlink()  # a key that no longer opens anything is replaced
    assert prepare(tmp_path / "d")[1] != key


def test_child_env_drops_production_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("DRTRAIN_DATABASE_URL", "postgresql://prod/db")
    monkeypatch.setenv("DRTRAIN_HEARTBEAT_SECONDS", "2")
    env = child_env(tmp_path)
    assert "DRTRAIN_DATABASE_URL" not in env
    assert env["DRTRAIN_DATA_DIR"] == str(tmp_path) and env["DRTRAIN_ENVIRONMENT"] == "embedded"
    assert env["DRTRAIN_HEARTBEAT_SECONDS"] == "2"


def test_server_commands_are_registered():
    commands = typer.main.get_command(app).commands
    assert {"up", "api", "worker", "migrate", "keys"} <= set(commands)
    assert "--tenant" in CliRunner().invoke(app, ["keys", "create", "--help"]).output
