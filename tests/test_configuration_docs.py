"""docs/configuration.md is the settings object rendered (scripts/gen_config_docs.py): every
setting described, each row named by the variable that is read, the file regenerated whenever
a setting changes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from drtrain.kit.settings import Settings
from scripts import gen_config_docs

ROOT = Path(__file__).resolve().parents[1]


def test_docs_configuration_md_is_current() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == gen_config_docs.render(Settings), \
        "docs/configuration.md is stale: run python scripts/gen_config_docs.py"


def test_every_setting_is_a_row_named_by_its_environment_variable() -> None:
    text = gen_config_docs.render(Settings)
    rows = re.findall(r"^\| `(DRTRAIN_[A-Z0-9_]+)` \|", text, flags=re.M)
    assert rows == [f"DRTRAIN_{name.upper()}" for name in Settings.model_fields]
    assert len(rows) >= 40


def test_a_row_says_what_the_variable_does(monkeypatch: pytest.MonkeyPatch) -> None:
    text = gen_config_docs.render(Settings)
    row = next(line for line in text.splitlines() if line.startswith("| `DRTRAIN_MAX_ATTEMPTS`"))
    assert row.split(" | ")[1:4] == ["integer", "`3`", ">= 1, <= 10"]
    monkeypatch.setenv("DRTRAIN_MAX_ATTEMPTS", "7")  # the name the table gives is the one read
    assert Settings().max_attempts == 7
    quota = next(line for line in text.splitlines() if "TENANT_STORAGE_QUOTA_BYTES" in line)
    assert "`21474836480` (20 GiB)" in quota


def test_a_setting_without_a_description_fails_the_generator() -> None:
    class Undescribed(Settings):
        model_config = SettingsConfigDict(env_prefix="DRTRAIN_", extra="ignore")
        forgotten: int = Field(1, ge=0)

    with pytest.raises(ValueError, match="forgotten"):
        gen_config_docs.render(Undescribed)
