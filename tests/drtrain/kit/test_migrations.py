"""Alembic is the only source of the schema: it must build the models' schema exactly,
on SQLite and PostgreSQL, and go down and up again."""
from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from drtrain.kit.migrate import alembic_config, downgrade, pending_changes, upgrade
from drtrain.kit.models import Base


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_upgrade_matches_models(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    assert pending_changes(url) == []
    downgrade(url)
    assert _tables(url) == set()
    upgrade(url)
    assert pending_changes(url) == []


def test_postgres_upgrade_matches_models(engine, pg_url):  # noqa: ANN001
    # pg_url was migrated by the session fixture exactly as production migrates.
    assert _tables(pg_url) == set(Base.metadata.tables)
    assert pending_changes(pg_url) == []
    with engine.connect() as conn:
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert current == ScriptDirectory.from_config(alembic_config(pg_url)).get_current_head()


def test_pending_changes_notices_a_model_the_migrations_lack(tmp_path: Path):
    from sqlalchemy import Column, Integer, Table

    url = f"sqlite:///{tmp_path / 'drift.sqlite3'}"
    upgrade(url)
    extra = Table("not_migrated", Base.metadata, Column("id", Integer, primary_key=True))
    try:
        diffs = pending_changes(url)
    finally:
        Base.metadata.remove(extra)
    assert any(d[0] == "add_table" and d[1].name == "not_migrated" for d in diffs)


def test_postgres_downgrade_and_upgrade_again(pg_url):  # noqa: ANN001
    from tests.pg import fresh_database

    with fresh_database("updown", migrate=False) as url:
        upgrade(url)
        downgrade(url)
        assert _tables(url) == set()
        upgrade(url)
        assert pending_changes(url) == []
