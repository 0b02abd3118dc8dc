"""A backend outage is one log line; anything else keeps its traceback (drtrain/kit/outages.py,
as the publisher and the reaper log their failures)."""
from __future__ import annotations

import logging

import pytest
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from drtrain.kit import publishing
from drtrain.kit.outages import outage_text
from drtrain.kit.settings import Settings


def test_outages_are_named_in_one_line_and_other_errors_are_none() -> None:
    db = OperationalError("SELECT 1", {}, OSError('connection to server at "127.0.0.1", port '
                                                  "5439 failed: Connection refused\nIs the "
                                                  "server running?"))
    assert outage_text(db) == ('database unreachable: OSError: connection to server at '
                               '"127.0.0.1", port 5439 failed: Connection refused')
    assert outage_text(BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection "
                                   "refused.")) == (
        "broker unreachable: OperationalError: Error 111 connecting to 127.0.0.1:6379. "
        "Connection refused.")
    assert outage_text(RedisConnectionError("refused")).startswith("broker unreachable: ")
    assert outage_text(ValueError("a bug")) is None


@pytest.mark.parametrize("error, traceback", [(BrokerError("Connection refused."), False),
                                              (RuntimeError("a bug"), True)])
def test_a_failed_publish_logs_a_traceback_only_for_what_is_no_outage(
        error: Exception, traceback: bool, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, tmp_path) -> None:  # noqa: ANN001
    from drtrain.kit import broker

    def fail(*_args: object) -> None:
        raise error

    monkeypatch.setattr(broker, "publish_run_job", fail)
    with caplog.at_level(logging.WARNING, logger=publishing.log.name):
        publishing.publish_jobs(Settings(data_dir=tmp_path, environment="test"), ["j1"])
    [record] = caplog.records
    assert record.getMessage().startswith("publishing job j1 failed; the reaper will retry")
    assert (record.exc_info is not None) == traceback
    if not traceback:
        assert record.getMessage().endswith("(broker unreachable: OperationalError: "
                                            "Connection refused.)")
