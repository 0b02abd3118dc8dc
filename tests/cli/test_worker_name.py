"""`drtrain worker --name`: several workers on one host get distinct Celery node names."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from drtrain_cli.main import app
from worker.argv import node_name


def test_node_names() -> None:
    assert node_name(None) is None
    assert node_name("gpu0") == "gpu0@%h"
    assert node_name("gpu0@rack3") == "gpu0@rack3"


@pytest.mark.parametrize(("given", "expected"), [("gpu1", "--hostname=gpu1@%h"), (None, None)])
def test_the_worker_command_passes_the_name_to_celery(monkeypatch: pytest.MonkeyPatch,
                                                      given: str | None,
                                                      expected: str | None) -> None:
    from worker import celery_app

    seen: list[list[str]] = []
    monkeypatch.setattr(celery_app.app, "worker_main", seen.append)
    args = ["worker", "--name", given] if given else ["worker"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    hostnames = [a for a in seen[0] if a.startswith("--hostname=")]
    assert hostnames == ([expected] if expected else [])
