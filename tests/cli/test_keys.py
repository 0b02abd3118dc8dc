"""``drtrain keys create|list|revoke`` against a real (SQLite) database."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.settings import get_settings
from drtrain.tenants.keys import tenant_for_key
from drtrain_cli.main import app

runner = CliRunner()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.setenv("DRTRAIN_DATABASE_URL", url)
    monkeypatch.setenv("DRTRAIN_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    upgrade(url)
    yield url
    get_settings.cache_clear()


def _tenant_of(url: str, key: str) -> str | None:
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            tenant = tenant_for_key(session, key)
            return tenant.name if tenant else None
    finally:
        engine.dispose()


def test_create_list_revoke(database: str) -> None:
    made = runner.invoke(app, ["keys", "create", "--tenant", "alice"])
    assert made.exit_code == 0, made.output
    key = made.output.strip().rsplit(" ", 1)[-1]
    runner.invoke(app, ["keys", "create", "--tenant", "bob"])
    assert _tenant_of(database, key) == "alice"

    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert "alice" in listed.output and "bob" in listed.output and key[:12] in listed.output
    assert key not in listed.output  # only the prefix is ever shown
    only = runner.invoke(app, ["keys", "list", "--tenant", "bob"])
    assert "alice" not in only.output and "bob" in only.output

    revoked = runner.invoke(app, ["keys", "revoke", key[:12]])
    assert revoked.exit_code == 0, revoked.output
    assert _tenant_of(database, key) is None
    assert runner.invoke(app, ["keys", "list", "--tenant", "alice"]).output.split()[-1] != "-"


def test_the_key_list_keeps_its_columns_aligned(database: str) -> None:
    for tenant in ("a", "research-team"):
        runner.invoke(app, ["keys", "create", "--tenant", tenant])
    runner.invoke(app, ["keys", "revoke", _prefix_of(runner.invoke(app, ["keys", "list"]), "a")])
    lines = [line for line in runner.invoke(app, ["keys", "list"]).output.splitlines()
             if line.strip() and not set(line.strip()) <= {"─", " "}]
    header, rows = lines[0], lines[1:]
    assert len(rows) == 2
    for column in ("PREFIX", "CREATED", "REVOKED"):
        start = header.index(column)
        assert all(row[start - 1] == " " and row[start] != " " for row in rows), lines


def _prefix_of(listed, tenant: str) -> str:
    return next(line.split()[1] for line in listed.output.splitlines()
                if line.split()[:1] == [tenant])


def test_create_says_when_it_creates_a_tenant(database: str) -> None:
    first = runner.invoke(app, ["keys", "create", "--tenant", "carol"])
    assert first.exit_code == 0 and "created tenant 'carol'" in first.output
    again = runner.invoke(app, ["keys", "create", "--tenant", "carol"])
    assert again.exit_code == 0 and "created tenant" not in again.output
    other = runner.invoke(app, ["keys", "create", "--tenant", "Carol"])
    assert "created tenant 'Carol'" in other.output  # names are exact


def test_revoke_unknown_prefix_fails(database: str) -> None:
    result = runner.invoke(app, ["keys", "revoke", "drt_nosuchkey"])
    assert result.exit_code == 1
    assert "no active key" in result.output


def test_revoke_asks_for_a_prefix_long_enough_to_name_one_key(database: str) -> None:
    result = runner.invoke(app, ["keys", "revoke", "drt_"])  # every key starts so
    assert result.exit_code == 2
    assert "give at least the key's first 12 characters" in result.output


def test_every_server_command_honours_the_global_data_dir(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from another folder (holding a `.drtrain` of its own), `drtrain --data-dir X ...`
    acts on X: migrate, keys create/list/revoke, and the settings api and worker start with."""
    import uvicorn

    from drtrain.kit.settings import get_settings

    monkeypatch.delenv("DRTRAIN_DATABASE_URL", raising=False)
    # Set, then removed: monkeypatch restores the variable the commands set in os.environ.
    monkeypatch.setenv("DRTRAIN_DATA_DIR", "")
    monkeypatch.delenv("DRTRAIN_DATA_DIR")
    elsewhere, data = tmp_path / "elsewhere", tmp_path / "data"
    (elsewhere / ".drtrain").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    get_settings.cache_clear()
    try:
        glob = ["--data-dir", str(data)]
        assert runner.invoke(app, [*glob, "migrate"]).exit_code == 0
        assert (data / "drtrain.sqlite3").exists()
        made = runner.invoke(app, [*glob, "keys", "create", "--tenant", "alice"])
        assert made.exit_code == 0, made.output
        key = made.output.strip().rsplit(" ", 1)[-1]
        listed = runner.invoke(app, [*glob, "keys", "list"])
        assert listed.exit_code == 0 and "alice" in listed.output, listed.output
        revoked = runner.invoke(app, [*glob, "keys", "revoke", key[:12]])
        assert revoked.exit_code == 0, revoked.output
        assert not (elsewhere / ".drtrain" / "drtrain.sqlite3").exists()

        seen: list[Path] = []
        monkeypatch.setattr(uvicorn, "run", lambda *a, **k: seen.append(get_settings().data_dir))
        assert runner.invoke(app, [*glob, "api"]).exit_code == 0
        from worker.celery_app import app as celery_app
        monkeypatch.setattr(celery_app, "worker_main",
                            lambda *a, **k: seen.append(get_settings().data_dir))
        assert runner.invoke(app, [*glob, "worker"]).exit_code == 0
        assert seen == [data.resolve(), data.resolve()]
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("made", [False, True], ids=["no-folder", "no-tables"])
def test_keys_on_a_database_not_yet_migrated_say_so(tmp_path: Path, made: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRTRAIN_DATABASE_URL", raising=False)
    data_dir = tmp_path / "fresh"
    if made:
        data_dir.mkdir()
    get_settings.cache_clear()
    try:
        for args in (["keys", "create", "--tenant", "a"], ["keys", "list"],
                     ["keys", "revoke", "drt_notakey0000"]):
            result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
            assert result.exit_code == 1, result.output
            assert result.exception is None or isinstance(result.exception, SystemExit)
            assert "error: database sqlite:///" in result.output
            assert "`drtrain migrate` creates the database" in result.output
            assert "Traceback" not in result.output
    finally:
        get_settings.cache_clear()


def test_migrate_names_a_database_it_cannot_reach_without_its_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTRAIN_DATABASE_URL",
                       "postgresql+psycopg://drtrain:s3cret@127.0.0.1:1/drtrain")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["migrate"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "error: database postgresql+psycopg://drtrain:***@127.0.0.1:1/drtrain" in result.output
    assert "s3cret" not in result.output


def test_a_postgresql_database_it_cannot_reach_gets_the_postgresql_hint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # migrate creates no PostgreSQL database: the hint says to create it first
    monkeypatch.setenv("DRTRAIN_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/drtrain")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["keys", "list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "create the database if it does not exist (`createdb`), then `drtrain migrate`" \
        in result.output


@pytest.mark.parametrize("variable, value, said", [
    ("DRTRAIN_LEASE_SECONDS", "abc", "error: DRTRAIN_LEASE_SECONDS='abc': Input should be a "
                                     "valid number"),
    ("DRTRAIN_ENVIRONMENT", "prod", "error: DRTRAIN_ENVIRONMENT='prod': environment must be "
                                    "embedded, production or test"),
    ("DRTRAIN_DATABASE_URL", "postgres://u@127.0.0.1/db", "error: DRTRAIN_DATABASE_URL: "),
])
def test_a_bad_setting_is_one_line_naming_its_variable(variable: str, value: str, said: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("DRTRAIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        for command in (["keys", "list"], ["migrate"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 2, result.output
            assert said in result.output and "Traceback" not in result.output, result.output
    finally:
        get_settings.cache_clear()


def test_migrate_and_keys_need_only_the_database_in_production(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the database machine migrates without the broker or the object store named
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    for name, value in (("DRTRAIN_ENVIRONMENT", "production"), ("DRTRAIN_DATABASE_URL", url),
                        ("DRTRAIN_DATA_DIR", str(tmp_path))):
        monkeypatch.setenv(name, value)
    for name in ("DRTRAIN_BROKER_URL", "DRTRAIN_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        migrated = runner.invoke(app, ["migrate"])
        assert migrated.exit_code == 0, migrated.output
        assert migrated.output.startswith("database migrated from revision none to 0012_")
        again = runner.invoke(app, ["migrate"])
        assert again.output.strip() == "database is up to date (revision " \
            "0012_dataset_feature_names)"
        assert runner.invoke(app, ["keys", "create", "--tenant", "p"]).exit_code == 0
        served = runner.invoke(app, ["api"])  # the API uses every backend
        assert served.exit_code == 2 and "production needs DRTRAIN_BROKER_URL, " \
            "DRTRAIN_STORAGE_URL" in served.output
    finally:
        get_settings.cache_clear()
