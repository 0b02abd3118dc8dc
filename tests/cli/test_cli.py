"""The client-side ``drtrain`` commands, run with typer's CliRunner against the fake server."""
from __future__ import annotations

import csv
import io
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from drtrain_cli.commands import context, output, watch
from drtrain_cli.main import app
from drtrain_client import DEFAULT_URL, Client, DrtrainError
from tests.cli.test_client import KEY, FakeApi, closed_port_url

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    """A fake server wired in through ``context.make_client``; the calls are recorded."""
    for name in ("DRTRAIN_URL", "DRTRAIN_API_KEY", "DRTRAIN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # so a developer's own .drtrain/api-key is never picked up
    api = FakeApi()
    api.made: list[tuple[str, str]] = []  # type: ignore[attr-defined]

    def make_client(url: str | None, key: str | None, data_dir: Path | None) -> Client:
        client = Client(url, key, data_dir=data_dir,
                        transport=__import__("httpx").MockTransport(api.handle))
        api.made.append((client.base_url, client.connection.api_key))  # type: ignore[attr-defined]
        return client

    monkeypatch.setattr(context, "make_client", make_client)
    return api


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, [*args], env=env)


def drtrain(*args: str) -> Result:
    """Run with the fake server's key on the command line."""
    return run(*args, "--key", KEY)


def assert_clean_failure(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# ---- where URL and key come from -----------------------------------------------------------

def test_missing_key_is_explained(fake: FakeApi) -> None:
    result = run("jobs", "list")
    assert_clean_failure(result, 1, "no API key: pass --key or set DRTRAIN_API_KEY (a server's "
                                    "operator makes one with `drtrain keys create`)")
    assert fake.requests == []


def test_key_from_the_embedded_data_folder(fake: FakeApi, tmp_path: Path) -> None:
    (tmp_path / ".drtrain").mkdir()
    (tmp_path / ".drtrain" / "api-key").write_text(KEY + "\n")
    result = run("datasets", "list", "--json")
    assert result.exit_code == 0, result.output
    assert fake.made == [(DEFAULT_URL, KEY)]  # type: ignore[attr-defined]


def test_key_from_a_named_data_folder_and_url_from_env(fake: FakeApi, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "api-key").write_text(KEY)
    result = run("datasets", "list", "--json",
                 env={"DRTRAIN_DATA_DIR": str(folder), "DRTRAIN_URL": "http://h:9"})
    assert result.exit_code == 0, result.output
    assert fake.made == [("http://h:9", KEY)]  # type: ignore[attr-defined]


def test_explicit_key_and_url_win(fake: FakeApi, tmp_path: Path) -> None:
    (tmp_path / ".drtrain").mkdir()
    (tmp_path / ".drtrain" / "api-key").write_text("drt_stale")
    result = run("datasets", "list", "--json", "--url", "http://x:1", "--key", "drt_given",
                 env={"DRTRAIN_API_KEY": "drt_env"})
    assert fake.made == [("http://x:1", "drt_given")]  # type: ignore[attr-defined]
    assert_clean_failure(result, 1, "401 Unauthorized")


def test_connection_refused_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRTRAIN_URL", raising=False)
    url = closed_port_url()
    result = run("jobs", "list", "--url", url, "--key", KEY)
    assert_clean_failure(result, 3, f"cannot reach drtrain at {url} (Connection refused): "
                                    "check the URL (as given) and that the API is running there")
    from_env = run("jobs", "list", "--key", KEY, env={"DRTRAIN_URL": url})
    assert_clean_failure(from_env, 3, "check the URL (from DRTRAIN_URL)")
    assert "drtrain up" not in result.output  # the server may be anything, anywhere


# ---- datasets ------------------------------------------------------------------------------

def test_datasets_list_says_how_many_rows_carry_a_label_and_a_side_value(
        fake: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 160)
    fake.datasets["f" * 32] = {"id": "f" * 32, "name": "few-labels", "format": "csv",
                               "status": "ready", "n_samples": 1797, "n_labelled": 180,
                               "n_with_side": 180, "n_features": 64, "n_classes": 10}
    listed = drtrain("datasets", "list").stdout
    header = next(line for line in listed.splitlines() if "labelled" in line)
    assert "with side" in header
    row = next(line for line in listed.splitlines() if "few-labels" in line)
    assert row.split()[3:6] == ["1797", "180", "180"]


def test_datasets_upload_list_delete(fake: FakeApi, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x1,x2,label,g\n1,2,a,u\n3,4,b,v\n5,6,a,u\n")
    result = drtrain("datasets", "upload", str(data), "--name", "tiny",
                     "--side-info-column", "g", "--json")
    assert result.exit_code == 0, result.output
    uploaded = json.loads(result.stdout)
    assert uploaded["n_samples"] == 3 and fake.uploads[-1]["side_info_column"][1] == b"g"

    result = drtrain("datasets", "upload", str(data))
    assert result.exit_code == 0 and "3 samples x 2 features" in result.stdout

    listed = json.loads(drtrain("datasets", "list", "--json").stdout)
    assert [d["id"] for d in listed] == ["builtin:digits", uploaded["id"], listed[2]["id"]]
    table = drtrain("datasets", "list").stdout
    assert "builtin:digits" in table and "tiny" in table

    assert drtrain("datasets", "get", uploaded["id"], "--json").exit_code == 0
    result = drtrain("datasets", "delete", uploaded["id"])
    assert result.exit_code == 0 and uploaded["id"] not in fake.datasets


def test_datasets_upload_waits_for_the_check_unless_told_not_to(fake: FakeApi,
                                                                tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x1,x2,label\n1,2,a\n3,4,b\n")
    result = drtrain("datasets", "upload", str(data), "--no-wait")
    assert result.exit_code == 0, result.output
    assert "the server is checking it" in result.stdout
    ds_id = next(iter(fake.checking))
    assert "status" in drtrain("datasets", "list").stdout  # the list shows it

    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,label\n1,2,a\n3,4,a\n# one class\n")
    assert_clean_failure(drtrain("datasets", "upload", str(bad)), 1,
                         "422 Unprocessable content: the labels hold one class only ('a')")
    assert ds_id in fake.datasets


def test_datasets_errors_show_the_problem_detail(fake: FakeApi, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,label\nnan,a\n")
    assert_clean_failure(drtrain("datasets", "upload", str(bad)), 1,
                         "422 Unprocessable content: row 2, column x1: NaN is not allowed")
    fake.busy_datasets.add("builtin:digits")
    assert_clean_failure(drtrain("datasets", "delete", "builtin:digits"), 1,
                         "409 Conflict: dataset builtin:digits is used by an active job")


def test_a_failure_with_several_invalid_fields_prints_one_line_each(fake: FakeApi,
                                                                    tmp_path: Path) -> None:
    from tests.cli.test_client import problem

    errors = [{"loc": ["body", "pretrain", "epochs"], "msg": "Input should be >= 0"},
              {"loc": ["body", "finetune", "epochs"], "msg": "Input should be a valid integer"}]
    fake.routes[:0] = [("POST", r"/v1/jobs", lambda r: problem(
        422, "Unprocessable content", "body.pretrain.epochs: Input should be >= 0", errors))]
    result = drtrain("jobs", "submit", write_spec(tmp_path, {"dataset_id": "builtin:digits"}))
    assert_clean_failure(result, 1, "422 Unprocessable content: body.pretrain.epochs: Input "
                                    "should be >= 0\n  - body.finetune.epochs: Input should be "
                                    "a valid integer")
    assert "\\x0a" not in result.stderr


# ---- jobs ----------------------------------------------------------------------------------

def write_spec(tmp_path: Path, spec: Any) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_jobs_submit(fake: FakeApi, tmp_path: Path) -> None:
    spec = {"dataset_id": "builtin:digits", "seed": 3}
    result = drtrain("jobs", "submit", write_spec(tmp_path, spec), "--idempotency-key", "abc",
                     "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert fake.jobs[job["id"]]["spec"] == spec
    assert fake.calls("POST", "/v1/jobs")[0].headers["idempotency-key"] == "abc"
    result = drtrain("jobs", "submit", write_spec(tmp_path, spec))
    assert result.exit_code == 0 and "submitted job" in result.stdout


def test_jobs_submit_rejections(fake: FakeApi, tmp_path: Path) -> None:
    result = drtrain("jobs", "submit", write_spec(tmp_path, {"seed": 1}))
    assert_clean_failure(result, 1, "body.dataset_id: Field required")
    broken = tmp_path / "broken.json"
    broken.write_text('{"dataset_id": ')
    assert_clean_failure(drtrain("jobs", "submit", str(broken)), 2, "is not valid JSON")
    assert_clean_failure(drtrain("jobs", "submit", str(tmp_path / "missing.json")), 2,
                         "cannot read")
    assert len(fake.calls("POST", "/v1/jobs")) == 1


def test_jobs_submit_watch_follows_the_job(fake: FakeApi, tmp_path: Path) -> None:
    original = fake.submit

    def submit_and_script(request: Any) -> Any:
        response = original(request)
        job_id = response.json()["id"]
        fake.add_points(job_id, 2, name="validation_accuracy")
        fake.script[job_id] = [{}, {"status": "succeeded", "progress": 1.0,
                                    "result": {"test_accuracy": 0.875}}]
        return response

    fake.routes[4] = ("POST", r"/v1/jobs", submit_and_script)
    result = drtrain("jobs", "submit", write_spec(tmp_path, {"dataset_id": "d"}), "--watch",
                     "--poll", "0")
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stdout and "0.875" in result.stdout


def test_jobs_watch_from_events_succeeds(fake: FakeApi) -> None:
    job_id = fake.add_job("running", phase="pretrain", layer=0, epoch=0, progress=0.1)["id"]
    fake.add_points(job_id, 3, name="reconstruction_error")
    # The first GET sees it running; the event stream then carries it to the end.
    fake.script[job_id] = [{}, {"status": "succeeded", "progress": 1.0, "phase": "finetune",
                                "layer": None, "epoch": 4, "result": {"test_accuracy": 0.9321}}]
    result = drtrain("jobs", "watch", job_id, "--poll", "0")
    assert result.exit_code == 0, result.output
    assert "reconstruction_error" in result.stdout
    assert "0.3333" in result.stdout  # the latest point (seq 3) is what the table shows
    assert "0.9321" in result.stdout and "100%" in result.stdout
    assert fake.calls("GET", r"/v1/jobs/\w+/events") and not fake.calls("GET", r".*/metrics")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_jobs_watch_exits_1_when_the_job_did_not_succeed(fake: FakeApi, status: str) -> None:
    job_id = fake.add_job("running")["id"]
    fake.script[job_id] = [{}, {"status": status, "status_reason": "worker lost 3 times"}]
    result = drtrain("jobs", "watch", job_id, "--poll", "0")
    assert_clean_failure(result, 1, f"job {job_id} {status}: worker lost 3 times")


def test_jobs_watch_falls_back_to_polling(fake: FakeApi) -> None:
    fake.events_broken = True
    job_id = fake.add_job("queued")["id"]
    fake.add_points(job_id, 2, name="train_loss")
    fake.script[job_id] = [{}, {"status": "running", "progress": 0.5}, {},
                           {"status": "succeeded", "progress": 1.0}]
    result = drtrain("jobs", "watch", job_id, "--poll", "0")
    assert result.exit_code == 0, result.output
    assert "polling" in result.stderr and "train_loss" in result.stdout
    assert len(fake.calls("GET", rf"/v1/jobs/{job_id}")) == 4
    since = [r.url.params["since"] for r in fake.calls("GET", r".*/metrics")]
    assert since[0] == "0" and since[-1] == "2"  # later polls ask only for new points


def test_jobs_watch_rides_out_an_api_restart(fake: FakeApi,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake.events_broken = True  # the stream ended with the old API process
    job_id = fake.add_job("running")["id"]
    fake.script[job_id] = [{}, {}, {"status": "succeeded", "progress": 1.0}]
    down = {"polls": 3}
    answer = fake.handle

    def restarting(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/jobs/{job_id}" and fake.calls("GET", r".*/events") \
                and down["polls"] > 0:
            down["polls"] -= 1
            raise httpx.ConnectError("Connection refused")
        return answer(request)

    monkeypatch.setattr(fake, "handle", restarting)
    result = drtrain("jobs", "watch", job_id, "--poll", "0")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("cannot reach drtrain") == 1  # said once, not once per poll
    assert "asking again for up to 120 s" in result.stderr and "reached drtrain again" in result.stderr


def test_jobs_watch_gives_up_on_a_server_gone_for_good(fake: FakeApi,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake.events_broken = True
    job_id = fake.add_job("running")["id"]
    answer = fake.handle

    def gone(request: httpx.Request) -> httpx.Response:
        if fake.calls("GET", r".*/events"):
            raise httpx.ConnectError("Connection refused")
        return answer(request)

    monkeypatch.setattr(fake, "handle", gone)
    monkeypatch.setattr(watch, "RECONNECT_SECONDS", 0.0)  # its patience spent at once
    result = drtrain("jobs", "watch", job_id, "--poll", "0")
    assert result.exit_code == 3, result.output  # unreachable, once its patience is spent
    assert "cannot reach drtrain" in result.stderr


def test_jobs_watch_of_a_finished_job_returns_at_once(fake: FakeApi) -> None:
    job_id = fake.add_job("succeeded", progress=1.0, result={"test_accuracy": 0.5})["id"]
    fake.add_points(job_id, 1, name="test_loss")
    result = drtrain("jobs", "watch", job_id)
    assert result.exit_code == 0 and "0.5" in result.stdout and "test_loss" in result.stdout
    assert not fake.calls("GET", r".*/events")


def test_jobs_list_tells_a_sweeps_jobs_apart_by_their_grid_point(fake: FakeApi) -> None:
    for weight in (0.1, 1.0):
        fake.add_job("queued", name="dr-sweep", sweep_id="s1",
                     grid_point={"pretrain.dr.weight": weight, "seed": 0})
    fake.add_job("queued", name="alone", sweep_id=None, grid_point=None)
    listed = drtrain("jobs", "list").stdout
    assert "dr-sweep pretrain.dr.weight=0.1 seed=0" in listed
    assert "dr-sweep pretrain.dr.weight=1.0 seed=0" in listed
    assert "alone " in listed


def test_an_empty_list_says_so_on_stderr_and_prints_no_table(fake: FakeApi) -> None:
    for command, said in ((["jobs", "list"], "no jobs"),
                          (["jobs", "list", "--status", "running", "--tag", "a"],
                           "no jobs in status running tagged a"),
                          (["sweeps", "list"], "no sweeps yet: `drtrain sweeps submit`")):
        result = drtrain(*command)
        assert result.exit_code == 0, result.output
        assert result.stdout == "" and said in result.stderr, (command, result.output)
        assert json.loads(drtrain(*command, "--json").stdout) == []


def test_jobs_list_refuses_a_status_that_is_none_before_asking(fake: FakeApi) -> None:
    result = drtrain("jobs", "list", "--status", "done")
    assert result.exit_code == 2 and "'done' is not one of 'queued'" in result.output
    assert not fake.calls("GET", r"/v1/jobs")  # nothing was sent


def test_jobs_list_get_cancel(fake: FakeApi) -> None:
    queued = fake.add_job("queued")["id"]
    done = fake.add_job("succeeded", result={"test_accuracy": 0.75})["id"]
    assert [j["id"] for j in json.loads(drtrain("jobs", "list", "--json").stdout)] == [done, queued]
    only = json.loads(drtrain("jobs", "list", "--status", "succeeded", "--json").stdout)
    assert [j["id"] for j in only] == [done]
    assert [j["id"] for j in json.loads(drtrain("jobs", "list", "--limit", "1", "--json").stdout)
            ] == [done]
    assert queued in drtrain("jobs", "list").stdout

    assert json.loads(drtrain("jobs", "get", done, "--json").stdout)["result"] == {
        "test_accuracy": 0.75}
    assert "0.75" in drtrain("jobs", "get", done).stdout
    assert_clean_failure(drtrain("jobs", "get", "nope"), 1, "no job id starts with 'nope'")
    assert_clean_failure(drtrain("jobs", "get", "ab" * 16), 1, "404 Not found")  # a full id

    result = drtrain("jobs", "cancel", queued)
    assert result.exit_code == 0 and "is cancelled" in result.stdout
    assert_clean_failure(drtrain("jobs", "cancel", done), 1, "409 Conflict")


def test_queue_shows_the_slots_and_the_waiting_jobs_by_position(fake: FakeApi) -> None:
    fake.add_job("running", dispatched_at="2026-01-01T00:00:00Z")
    waiting = [fake.add_job("queued", job_id=f"{i}" * 32, dispatched_at=None)["id"]
               for i in range(3)]
    result = drtrain("queue")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("running slots" in line and "1 of 2 in use" in line for line in lines)
    assert any("waiting" in line and "3 (at most 5 may wait)" in line for line in lines)
    assert [line.split() for line in lines if line.split()[-1:] and line.split()[-1] in waiting
            ] == [[str(n), job_id] for n, job_id in enumerate(waiting, start=1)]
    shortened = drtrain("queue", "--limit", "1")
    assert waiting[1] not in shortened.stdout and "… and 2 more" in shortened.stdout
    assert fake.requests[-1].url.params["limit"] == "1"
    assert json.loads(drtrain("queue", "--json").stdout)["items"][2] == {
        "position": 3, "job_id": waiting[2]}
    assert "over a lowered cap" not in shortened.stdout
    fake.running_limit = 0  # a cap lowered while a job runs
    assert "1 of 0 in use (over a lowered cap: the jobs running keep their slots" in \
        " ".join(drtrain("queue").stdout.split())


def test_jobs_get_says_where_a_queued_job_stands(fake: FakeApi) -> None:
    fake.add_job("running", dispatched_at="2026-01-01T00:00:00Z")
    slotted = fake.add_job("queued", dispatched_at="2026-01-01T00:00:01Z")["id"]
    first, second = (fake.add_job("queued", dispatched_at=None)["id"] for _ in range(2))
    assert "waiting for a running slot: position 2 of 2" in drtrain("jobs", "get", second).stdout
    assert fake.requests[-1].url.params["job_id"] == second
    assert "waiting for a running slot: position 1 of 2" in drtrain("jobs", "get", first).stdout
    shown = drtrain("jobs", "get", slotted).stdout
    assert "waiting for a worker" in shown and "position" not in shown
    # A job of a server from before the queue (no dispatched_at) is never asked about.
    older = fake.add_job("queued")["id"]
    asked = len(fake.calls("GET", "/v1/queue"))
    assert "waiting for" not in drtrain("jobs", "get", older).stdout
    assert "waiting for" not in drtrain("jobs", "get", first, "--json").stdout
    assert len(fake.calls("GET", "/v1/queue")) == asked


def test_jobs_watch_says_what_a_queued_job_waits_for() -> None:
    from drtrain_cli.commands.watch import WatchView

    view = WatchView("j1")
    for dispatched_at, text in ((None, "queued · waiting for a running slot"),
                                ("2026-01-01T00:00:00Z", "queued · waiting for a worker")):
        view.update_job({"id": "j1", "status": "queued", "dispatched_at": dispatched_at})
        assert view.progress.tasks[0].description == text
    view.update_job({"id": "j1", "status": "queued"})  # a server from before the queue
    assert view.progress.tasks[0].description == "queued"


def test_jobs_download_resumes_and_verifies(fake: FakeApi, tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(fake.model[:1000])
    result = drtrain("jobs", "download", job_id, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == fake.model and "resumed at byte 1000" in result.stdout
    fake.model_etag = '"' + "0" * 64 + '"'
    assert_clean_failure(drtrain("jobs", "download", job_id, "-o", str(tmp_path / "b")), 1,
                         "downloaded model is corrupt")
    assert not (tmp_path / "b").exists()


def test_jobs_metrics_and_checkpoints(fake: FakeApi) -> None:
    job_id = fake.add_job("running")["id"]
    fake.add_points(job_id, 4)
    points = json.loads(drtrain("jobs", "metrics", job_id, "--since", "2", "--json").stdout)
    assert [p["seq"] for p in points] == [3, 4]
    assert "train_loss" in drtrain("jobs", "metrics", job_id).stdout
    assert json.loads(drtrain("jobs", "checkpoints", job_id, "--json").stdout)[0]["kind"] == "final"
    assert "final" in drtrain("jobs", "checkpoints", job_id).stdout


def test_jobs_predict_from_csv_and_json(fake: FakeApi, tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c\n1,2,3\n-1,-2,0.5\n")
    answer = json.loads(drtrain("jobs", "predict", job_id, "--inputs", str(rows), "--json").stdout)
    assert fake.predicted[-1] == [[1.0, 2.0, 3.0], [-1.0, -2.0, 0.5]]
    assert answer["predictions"] == ["pos", "neg"]
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps({"inputs": [[0, 0, -1]]}))
    result = drtrain("jobs", "predict", job_id, "--inputs", str(as_json))
    assert result.exit_code == 0 and "neg" in result.stdout and "0.7" in result.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,x,6\n")
    assert_clean_failure(drtrain("jobs", "predict", job_id, "--inputs", str(bad)), 2,
                         "data row 2 is not all numbers")
    sent = len(fake.predicted)
    for name, text, said in [("nan.csv", "1,2,3\n4,nan,6\n", "data row 2, column 2: nan"),
                             ("inf.csv", "a,b,c\n1,2,inf\n", "data row 1, column 3: inf"),
                             ("nan.json", '{"inputs": [[1, NaN, 3]]}', "data row 1, column 2: nan"),
                             ("inf.json", "[[-Infinity, 0, 0]]", "data row 1, column 1: -inf")]:
        path = tmp_path / name
        path.write_text(text)
        assert_clean_failure(drtrain("jobs", "predict", job_id, "--inputs", str(path)), 2,
                             f"{said} is not a finite number")
    assert len(fake.predicted) == sent  # nothing was sent


def test_sweeps_submit_and_get(fake: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"base": {"dataset_id": "builtin:digits"},
                                "grid": {"pretrain.dr.weight": [0, 0.1], "seed": [0, 1]}}))
    result = drtrain("sweeps", "submit", str(path))
    assert result.exit_code == 0 and "with 4 jobs" in result.stdout
    sweep_id = next(iter(fake.sweeps))
    shown = drtrain("sweeps", "get", sweep_id)
    assert shown.exit_code == 0 and "test_accuracy=0.9±0.01" in shown.stdout
    fake.sweeps[sweep_id]["summary"][0]["metrics"]["test_accuracy"] = {"mean": 0.8, "std": 0.0,
                                                                       "n": 1}
    assert "test_accuracy=0.8 (1 run)" in drtrain("sweeps", "get", sweep_id).stdout
    assert json.loads(drtrain("sweeps", "get", sweep_id, "--json").stdout)["id"] == sweep_id
    path.write_text(json.dumps({"grid": {}}))
    assert_clean_failure(drtrain("sweeps", "submit", str(path)), 2, "expected")


# ---- global options --------------------------------------------------------------------------

def test_global_options_before_the_command(fake: FakeApi) -> None:
    result = run("--url", "http://g:1", "--key", KEY, "datasets", "list", "--json")
    assert result.exit_code == 0, result.output
    assert fake.made == [("http://g:1", KEY)]  # type: ignore[attr-defined]


def test_options_after_the_command_win_over_global_ones(fake: FakeApi) -> None:
    result = run("--url", "http://g:1", "--key", "drt_wrong", "datasets", "list", "--json",
                 "--url", "http://c:2", "--key", KEY)
    assert result.exit_code == 0, result.output
    assert fake.made == [("http://c:2", KEY)]  # type: ignore[attr-defined]


def test_url_and_key_from_the_data_folder_that_up_writes(fake: FakeApi, tmp_path: Path) -> None:
    folder = tmp_path / "up-here"
    folder.mkdir()
    (folder / "url").write_text("http://embedded:8123\n")
    (folder / "api-key").write_text(KEY + "\n")
    assert run("--data-dir", str(folder), "jobs", "list", "--json").exit_code == 0
    assert run("jobs", "list", "--json", env={"DRTRAIN_DATA_DIR": str(folder),
                                              "DRTRAIN_URL": "http://env:1"}).exit_code == 0
    assert fake.made == [("http://embedded:8123", KEY),  # type: ignore[attr-defined]
                         ("http://env:1", KEY)]


# ---- id prefixes -----------------------------------------------------------------------------

def test_unique_id_prefixes_are_accepted(fake: FakeApi) -> None:
    first = fake.add_job("succeeded", job_id="3f2a" + "0" * 28)["id"]
    second = fake.add_job("queued", job_id="3f2b" + "1" * 28)["id"]
    assert json.loads(drtrain("jobs", "get", "3f2a", "--json").stdout)["id"] == first
    result = drtrain("jobs", "cancel", "3f2b")
    assert result.exit_code == 0 and f"job {second} is cancelled" in result.stdout
    listed = len(fake.calls("GET", "/v1/jobs"))
    assert drtrain("jobs", "get", first, "--json").exit_code == 0
    assert len(fake.calls("GET", "/v1/jobs")) == listed  # a full id is used without listing
    assert json.loads(drtrain("datasets", "get", "builtin:dig", "--json").stdout)["n_classes"] == 10


def test_ambiguous_short_or_unknown_prefixes_are_clear_errors(fake: FakeApi) -> None:
    fake.add_job("queued", job_id="3f2a" + "0" * 28)
    fake.add_job("queued", job_id="3f2a" + "1" * 28)
    assert_clean_failure(drtrain("jobs", "get", "3f2a"), 2, "'3f2a' is the start of 2 job ids")
    # Fewer than 4 characters name no job, even a single match: `jobs delete 3` must not
    # delete whatever job happens to start with 3.
    fake.add_job("succeeded", job_id="9c" + "0" * 30)
    assert_clean_failure(drtrain("jobs", "delete", "9c", "--yes"), 2,
                         "'9c' is too short to name a job: type at least 4 characters")
    assert_clean_failure(drtrain("jobs", "watch", "ffff"), 1, "no job id starts with 'ffff'")
    assert_clean_failure(drtrain("datasets", "delete", "nothing"), 1,
                         "no dataset id starts with 'nothing'")
    assert not fake.calls("DELETE", r".*")


def test_sweep_prefix(fake: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"base": {"dataset_id": "d"}, "grid": {"seed": [0, 1]}}))
    sweep_id = json.loads(drtrain("sweeps", "submit", str(path), "--json").stdout)["id"]
    assert json.loads(drtrain("sweeps", "get", sweep_id, "--json").stdout)["id"] == sweep_id
    assert_clean_failure(drtrain("sweeps", "get", sweep_id[:2]), 2, "too short")


# ---- compare, metrics as CSV, checkpoints ----------------------------------------------------

def test_jobs_compare_shows_metrics_and_the_spec_fields_that_differ(fake: FakeApi) -> None:
    base = {"dataset_id": "d", "pretrain": {"epochs": 5, "dr": {"weight": 0.1}}, "seed": 0}
    first = fake.add_job("succeeded", spec=base,
                         result={"test_accuracy": 0.9123, "epochs_pretrain": 5.0,
                                 "metrics": {"test_accuracy": 0.9123, "epochs_pretrain": 5.0},
                                 "epochs": {"pretrain": 5, "finetune": 0}, "note": "x"})["id"]
    second = fake.add_job("failed", result=None, spec={
        **base, "pretrain": {"epochs": 5, "dr": {"weight": 1.0}}, "seed": 1, "device": "cpu"})["id"]
    answer = json.loads(drtrain("jobs", "compare", first, second, "--json").stdout)
    assert answer["jobs"] == [first, second] and answer["status"] == ["succeeded", "failed"]
    # each figure once, though the result holds it again under "metrics" and "epochs"
    assert answer["metrics"] == {"epochs_pretrain": [5.0, None], "test_accuracy": [0.9123, None]}
    assert answer["spec_differences"] == {"device": [None, "cpu"],
                                          "pretrain.dr.weight": [0.1, 1.0], "seed": [0, 1]}
    shown = drtrain("jobs", "compare", first, second)
    assert shown.exit_code == 0, shown.output
    assert "0.9123" in shown.stdout and "pretrain.dr.weight" in shown.stdout
    assert "pretrain.epochs" not in shown.stdout and "dataset_id" not in shown.stdout
    assert_clean_failure(drtrain("jobs", "compare", first), 2, "at least two jobs")
    # the same job twice (an id and its prefix) is not a comparison
    assert_clean_failure(drtrain("jobs", "compare", first, first[:6]), 2,
                         f"compare: {first} named more than once")


def test_jobs_metrics_names_the_metrics_there_are_when_a_name_matches_none(fake: FakeApi
                                                                          ) -> None:
    job_id = fake.add_job("succeeded")["id"]
    fake.add_points(job_id, 2, name="val_accuracy")
    result = drtrain("jobs", "metrics", job_id, "--name", "validation_accuracy", "--csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == "seq,phase,layer,epoch,name,value,at\n"
    assert "no points named validation_accuracy; this job has these: val_accuracy" in \
        result.stderr
    found = drtrain("jobs", "metrics", job_id, "--name", "val_accuracy", "--csv")
    assert found.stderr == ""


def test_jobs_metrics_by_name_as_csv(fake: FakeApi) -> None:
    job_id = fake.add_job("running")["id"]
    fake.add_points(job_id, 3, name="train_loss")
    fake.add_points(job_id, 2, name="test_accuracy")
    result = drtrain("jobs", "metrics", job_id, "--name", "test_accuracy", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["seq", "phase", "layer", "epoch", "name", "value", "at"]
    assert [(r[0], r[2], r[4], float(r[5])) for r in rows[1:]] == [
        ("4", "", "test_accuracy", 0.25), ("5", "", "test_accuracy", 0.2)]
    assert_clean_failure(drtrain("jobs", "metrics", job_id, "--csv", "--json"), 2, "one of")


def test_jobs_checkpoints_and_checkpoint_download(fake: FakeApi, tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    listed = drtrain("jobs", "checkpoints", job_id).stdout
    assert "c1" in listed and "c2" in listed and "layer" in listed
    out = tmp_path / "layer0.safetensors"
    result = drtrain("jobs", "checkpoint-download", job_id, "c2", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == fake.checkpoint_files["c2"] and "saved" in result.stdout
    assert_clean_failure(drtrain("jobs", "checkpoint-download", job_id, "c", "-o", str(out)), 2,
                         "'c' is too short to name a checkpoint")
    fake.checkpoint_etags["c1"] = "0" * 64
    bad = tmp_path / "final.safetensors"
    assert_clean_failure(drtrain("jobs", "checkpoint-download", job_id, "c1", "-o", str(bad)), 1,
                         "downloaded checkpoint is corrupt")
    assert not bad.exists()


# ---- progress bars ---------------------------------------------------------------------------

def test_transfers_draw_a_progress_bar_on_a_terminal_only_on_stderr(
        fake: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(output, "err_console", Console(file=screen, force_terminal=True,
                                                       width=100))
    data = tmp_path / "d.csv"
    data.write_text("x1,x2,label\n1,2,a\n3,4,b\n")
    result = drtrain("datasets", "upload", str(data), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["n_samples"] == 2
    job_id = fake.add_job("succeeded")["id"]
    assert drtrain("jobs", "download", job_id, "-o", str(tmp_path / "m.st")).exit_code == 0
    drawn = screen.getvalue()
    assert "upload d.csv" in drawn and "model -> m.st" in drawn
    assert "upload d.csv" not in result.stdout


# ---- names, tags and warnings ----------------------------------------------------------------

def test_warnings_are_shown_on_stderr_and_names_and_tags_listed(fake: FakeApi,
                                                                 tmp_path: Path) -> None:
    job = fake.add_job(status="succeeded", name="first", tags=["study"],
                       warnings=["finetune.batch_size 4096 is more than the 10 training rows"])
    fake.add_job(status="succeeded", name="second", tags=[])
    got = drtrain("jobs", "get", job["id"])
    assert got.exit_code == 0, got.output
    assert "warning: finetune.batch_size 4096" in got.stderr
    assert "first" in got.stdout and "study" in got.stdout
    as_json = drtrain("jobs", "get", job["id"], "--json")
    # Scripts read them from the JSON; stderr stays quiet.
    assert as_json.stderr == "" and json.loads(as_json.stdout)["warnings"] == job["warnings"]
    listed = drtrain("jobs", "list", "--tag", "study")
    assert listed.exit_code == 0, listed.output
    assert "first" in listed.stdout and "second" not in listed.stdout
    assert fake.requests[-1].url.params["tag"] == "study"


def test_delete_a_finished_job(fake: FakeApi) -> None:
    done = fake.add_job(status="succeeded")
    result = drtrain("jobs", "delete", done["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert done["id"] not in fake.jobs


def test_delete_asks_first(fake: FakeApi) -> None:
    job = fake.add_job(status="succeeded")
    for answer in ("n\n", "\n", ""):  # no, the default, and no terminal to ask
        declined = runner.invoke(app, ["jobs", "delete", job["id"], "--key", KEY], input=answer)
        assert declined.exit_code == 1 and "nothing done" in declined.stderr, declined.output
        assert job["id"] in fake.jobs and not fake.calls("DELETE", r".*")
    agreed = runner.invoke(app, ["jobs", "delete", job["id"], "--key", KEY], input="y\n")
    assert agreed.exit_code == 0 and f"delete job {job['id']}" in agreed.stderr, agreed.output
    assert job["id"] not in fake.jobs


def test_delete_a_running_job_is_refused(fake: FakeApi) -> None:
    active = fake.add_job(status="running")
    assert_clean_failure(drtrain("jobs", "delete", active["id"], "--yes"), 1, "is running")
    assert active["id"] in fake.jobs


def _sweep(fake: FakeApi, *statuses: str, sweep_id: str = "5eed" + "0" * 28) -> dict:
    """A sweep in the fake API whose jobs have ``statuses``."""
    jobs = [fake.add_job(status) for status in statuses]
    fake.sweeps[sweep_id] = {"id": sweep_id, "base": {}, "grid": {"seed": [0]}, "summary": [],
                             "children": [{"job_id": j["id"], "grid_point": {"seed": i},
                                           "status": j["status"], "result": None}
                                          for i, j in enumerate(jobs)]}
    return fake.sweeps[sweep_id]


def test_delete_a_finished_sweep_by_prefix(fake: FakeApi) -> None:
    sweep = _sweep(fake, "succeeded", "failed")
    result = drtrain("sweeps", "delete", "5eed", "--yes")
    assert result.exit_code == 0, result.output
    assert f"deleted sweep {sweep['id']}" in result.stdout
    assert sweep["id"] not in fake.sweeps and not fake.jobs
    assert [r.url.path for r in fake.calls("DELETE", r".*")] == [f"/v1/sweeps/{sweep['id']}"]


def test_delete_sweep_asks_first(fake: FakeApi) -> None:
    sweep = _sweep(fake, "succeeded")
    for answer in ("n\n", "\n", ""):  # no, the default, and no terminal to ask
        declined = runner.invoke(app, ["sweeps", "delete", sweep["id"], "--key", KEY],
                                 input=answer)
        assert declined.exit_code == 1 and "nothing done" in declined.stderr, declined.output
        assert sweep["id"] in fake.sweeps and not fake.calls("DELETE", r".*")
    agreed = runner.invoke(app, ["sweeps", "delete", sweep["id"], "--key", KEY], input="y\n")
    assert agreed.exit_code == 0 and f"delete sweep {sweep['id']}" in agreed.stderr, agreed.output
    assert sweep["id"] not in fake.sweeps


def test_delete_sweep_short_prefix_or_active_jobs_are_refused(fake: FakeApi) -> None:
    sweep = _sweep(fake, "succeeded", "running")
    assert_clean_failure(drtrain("sweeps", "delete", "5ee", "--yes"), 2,
                         "'5ee' is too short to name a sweep: type at least 4 characters")
    assert not fake.calls("DELETE", r".*")
    running = sweep["children"][1]["job_id"]
    assert_clean_failure(drtrain("sweeps", "delete", "5eed", "--yes"), 1, running)
    assert sweep["id"] in fake.sweeps and len(fake.jobs) == 2


# ---- control characters from the server never reach the terminal ---------------------------

# ESC sequences (CSI clear screen, OSC retitle ended by BEL), a carriage return and C1 CSI.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\rX\x9b31m\x00end"
CONTROL = __import__("re").compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _hostile_server(fake: FakeApi, tmp_path: Path) -> list[list[str]]:
    """A hostile string in every string the fake serves; the commands that print them."""
    from tests.cli.test_client import problem

    job = fake.add_job("failed", job_id="a" * 32, name=HOSTILE, status_reason=HOSTILE,
                       warnings=[HOSTILE], tags=[HOSTILE], phase=HOSTILE,
                       result={"test_accuracy": 0.5, HOSTILE: 1.0}, spec={"name": HOSTILE})
    fake.add_job("succeeded", job_id="b" * 32, name="plain", spec={"name": "plain"})
    waiting = fake.add_job("queued", job_id="c" * 32, dispatched_at=None)
    fake.add_points(job["id"], 2, name=HOSTILE)
    fake.datasets["ds9"] = {"id": "ds9", "name": HOSTILE, "format": HOSTILE, "n_samples": 3,
                            "n_features": 2, "n_classes": 2, "classes": [HOSTILE]}
    fake.sweeps["sw9"] = {"id": "sw9", "children": [
        {"job_id": job["id"], "grid_point": {"seed": HOSTILE}, "status": HOSTILE}],
        "summary": [{"point": {"seed": HOSTILE}, "n": 1, "n_done": 1,
                     "metrics": {HOSTILE: {"mean": 1.0, "std": 0.0}}}]}
    fake.routes[:0] = [
        ("POST", r"/v1/jobs/(?P<id>[^/]+)/predict", lambda r, id: httpx.Response(
            200, json={"predictions": [HOSTILE], "probabilities": [[1.0]]})),
        ("POST", r"/v1/jobs/(?P<id>[^/]+)/cancel", lambda r, id: problem(409, "Conflict",
                                                                          HOSTILE)),
        ("GET", r"/v1/queue", lambda r: httpx.Response(200, json={
            "running_limit": HOSTILE, "queued_limit": 5, "dispatched": 1, "waiting": 1,
            "items": [{"position": HOSTILE, "job_id": HOSTILE}], "position": HOSTILE}))]
    rows = tmp_path / "rows.json"
    rows.write_text("[[1, 2, 3]]")
    return [["jobs", "list"], ["jobs", "get", job["id"]], ["jobs", "watch", job["id"]],
            ["jobs", "predict", job["id"], "--inputs", str(rows)],
            ["jobs", "compare", job["id"], "b" * 32], ["jobs", "metrics", job["id"]],
            ["jobs", "cancel", job["id"]], ["datasets", "list"], ["datasets", "get", "ds9"],
            ["sweeps", "get", "sw9"], ["queue"], ["jobs", "get", waiting["id"]]]


def test_no_command_prints_a_control_character_from_the_server(fake: FakeApi,
                                                                tmp_path: Path) -> None:
    for command in _hostile_server(fake, tmp_path):
        result = drtrain(*command)
        printed = result.stdout + result.stderr
        assert "Traceback" not in printed, (command, printed)
        assert CONTROL.search(printed) is None, (command, printed)
        assert "\\x1b" in printed, (command, printed)  # shown, not dropped


# ---- predict from a CSV shaped like the training data -----------------------------------------

def test_predict_csv_leaves_out_the_label_and_side_columns(fake: FakeApi, tmp_path: Path) -> None:
    fake.datasets["ds7"] = {"id": "ds7", "name": "mine", "format": "csv", "n_samples": 2,
                            "label_column": "species", "side_info_column": "site"}
    job = fake.add_job("succeeded", job_id="d" * 32, dataset_id="ds7")
    rows = tmp_path / "rows.csv"
    rows.write_text("a,species,b,site,c,label\n1,cat,2,north,3,7\n-4,dog,-5,south,-6,1\n")
    result = drtrain("jobs", "predict", job["id"], "--inputs", str(rows))
    assert result.exit_code == 0, result.output
    assert fake.predicted == [[[1.0, 2.0, 3.0], [-4.0, -5.0, -6.0]]]
    # The dataset gone: `label` alone is left out.
    del fake.datasets["ds7"]
    rows.write_text("a,b,c,label\n1,2,3,7\n")
    assert drtrain("jobs", "predict", job["id"], "--inputs", str(rows)).exit_code == 0
    assert fake.predicted[-1] == [[1.0, 2.0, 3.0]]


def test_predict_csv_matches_its_columns_to_the_training_features_by_name(
        fake: FakeApi, tmp_path: Path) -> None:
    fake.datasets["ds8"] = {"id": "ds8", "name": "mine", "format": "csv", "n_samples": 2,
                            "label_column": "label", "side_info_column": None,
                            "feature_names": ["a", "b", "c"]}
    job = fake.add_job("succeeded", job_id="e" * 32, dataset_id="ds8")
    rows = tmp_path / "rows.csv"
    # the columns in another order than the training file's: put back by name
    rows.write_text("c,label,a,b\n3,x,1,2\n-6,y,-4,-5\n")
    result = drtrain("jobs", "predict", job["id"], "--inputs", str(rows))
    assert result.exit_code == 0, result.output
    assert fake.predicted[-1] == [[1.0, 2.0, 3.0], [-4.0, -5.0, -6.0]]
    sent = len(fake.predicted)
    for header, said in [("a,b,q", "missing ['c']; not a feature ['q']"),
                         ("a,b", "missing ['c']"),
                         ("a,b,c,d", "not a feature ['d']")]:
        width = len(header.split(","))
        rows.write_text(f"{header}\n" + ",".join(["1"] * width) + "\n")
        assert_clean_failure(drtrain("jobs", "predict", job["id"], "--inputs", str(rows)), 2,
                             f"the header's columns are not the training set's features ({said}); "
                             "the model takes 3 columns by name, in any order: a, b, c")
    assert len(fake.predicted) == sent  # nothing was sent
    rows.write_text("1,2,3\n")  # no header: the columns are taken as they come
    assert drtrain("jobs", "predict", job["id"], "--inputs", str(rows)).exit_code == 0


# ---- tables at 80 columns -----------------------------------------------------------------------

def test_tables_fit_80_columns_by_leaving_columns_out(fake: FakeApi, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 80)
    for i, status in enumerate(("running", "succeeded", "cancelled")):
        fake.add_job(status, job_id=f"{i}" * 32, name=f"probe-run-number-{i}",
                     phase="finetune", layer=1, epoch=30, progress=0.5,
                     created_at="2026-12-06T21:00:00Z")
    fake.datasets["e" * 32] = {"id": "e" * 32, "name": "fashion-mnist-train", "format": "idx",
                               "status": "ready", "n_samples": 60000, "n_features": 784,
                               "n_classes": 10}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"base": {"dataset_id": "d"},
                                "grid": {"finetune.dr.weight": [0, 0.1], "seed": [0, 1]}}))
    drtrain("sweeps", "submit", str(path))
    for command in (["jobs", "list"], ["datasets", "list"], ["jobs", "checkpoints", "0" * 32],
                    ["sweeps", "list"]):
        result = drtrain(*command)
        assert result.exit_code == 0, result.output
        assert "…" not in result.stdout, (command, result.stdout)
        assert max(map(len, result.stdout.splitlines())) <= 80, (command, result.stdout)
        # columns are left out rather than folded: no line of a row goes on without its id
        rows = [line for line in result.stdout.splitlines() if line.strip()][2:]
        assert all(row[:4].strip() for row in rows), (command, result.stdout)
    listed = drtrain("jobs", "list").stdout
    assert all(f"probe-run-number-{i}" in listed and f"{i}" * 32 in listed for i in range(3))
    assert "succeeded" in listed and "cancelled" in listed
def test_jobs_logs_prints_an_attempts_lines(fake: FakeApi) -> None:
    job_id = fake.add_job("failed", attempt=2)["id"]
    fake.log_lines[job_id] = {1: ["first try"], 2: ["second try", "Traceback (most recent "
                                                    "call last):", "  boom"]}
    result = drtrain("jobs", "logs", job_id)
    assert result.exit_code == 0, result.output
    assert result.stdout == "second try\nTraceback (most recent call last):\n  boom\n"
    assert drtrain("jobs", "logs", job_id, "--attempt", "1").stdout == "first try\n"


def test_jobs_logs_follow_prints_new_lines_until_the_job_ends(fake: FakeApi) -> None:
    job_id = fake.add_job("running")["id"]
    # Each GET of the job finds more lines; the job retries once, then succeeds.
    fake.log_script[job_id] = [{1: ["claimed", "epoch 1"]}, {1: ["epoch 2"]},
                               {1: ["lost"], 2: ["resumed"]}, {2: ["epoch 3", "done"]}]
    fake.script[job_id] = [{}, {}, {"attempt": 2}, {"status": "succeeded"}]
    result = drtrain("jobs", "logs", job_id, "--follow", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout == "claimed\nepoch 1\nepoch 2\nlost\nresumed\nepoch 3\ndone\n"
    assert "-- attempt 2 --" in result.stderr
    asked = [(r.url.params.get("attempt"), r.url.params["since"])
             for r in fake.calls("GET", r".*/logs")]
    assert asked == [("1", "0"), ("1", "2"), ("1", "3"), ("2", "0"), ("2", "1")]


def test_the_cli_says_why_it_waits_on_a_busy_server(capsys: pytest.CaptureFixture[str]) -> None:
    client = context.make_client("http://127.0.0.1:9", KEY, None)
    try:
        assert client.on_retry is context.say_retry  # every command's client announces waits
    finally:
        client.close()
    context.say_retry(DrtrainError(429, "Too many active jobs", "the tenant has 8"), 4.2)
    assert "server busy (429 Too many active jobs: the tenant has 8); trying again in 4 s" \
        in capsys.readouterr().err


def test_version_is_the_installed_packages() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout == f"drtrain {version('drtrain')}\n"


def test_cancel_a_sweep_by_prefix(fake: FakeApi) -> None:
    sweep = _sweep(fake, "succeeded", "queued", "running", "queued")
    result = drtrain("sweeps", "cancel", "5eed")
    assert result.exit_code == 0, result.output
    assert f"sweep {sweep['id']}: 2 cancelled, 1 cancelling, 1 succeeded" in result.stdout
    assert [r.url.path for r in fake.calls("POST", r".*/cancel")] == [
        f"/v1/sweeps/{sweep['id']}/cancel"]
    statuses = [fake.jobs[c["job_id"]]["status"] for c in sweep["children"]]
    assert statuses == ["succeeded", "cancelled", "cancelling", "cancelled"]
    shown = json.loads(drtrain("sweeps", "cancel", "5eed", "--json").stdout)
    assert [c["status"] for c in shown["children"]] == statuses


def test_sweep_summary_as_csv(fake: FakeApi) -> None:
    sweep = _sweep(fake, "succeeded", "succeeded", "queued")
    sweep["summary"] = [
        {"point": {"pretrain.dr.weight": 0.0, "model.hidden_layers": [8, 4]}, "n": 2, "n_done": 2,
         "metrics": {"val_accuracy": {"mean": 0.9, "std": 0.01, "n": 2},
                     "test_accuracy": {"mean": 0.8, "std": 0.0, "n": 1}}},
        {"point": {"pretrain.dr.weight": 0.1, "model.hidden_layers": [8, 4]}, "n": 1, "n_done": 0,
         "metrics": {}}]
    result = drtrain("sweeps", "get", "5eed", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        ["pretrain.dr.weight", "model.hidden_layers", "n", "n_done", "test_accuracy_mean",
         "test_accuracy_std", "test_accuracy_n", "val_accuracy_mean", "val_accuracy_std",
         "val_accuracy_n"],
        ["0.0", "[8, 4]", "2", "2", "0.8", "", "1", "0.9", "0.01", "2"],  # one run: no std
        ["0.1", "[8, 4]", "1", "0", "", "", "", "", "", ""]]
    assert_clean_failure(drtrain("sweeps", "get", "5eed", "--csv", "--json"), 2,
                         "choose one of --csv and --json")


def test_jobs_get_names_a_sweeps_job_by_its_sweep_and_grid_point(fake: FakeApi) -> None:
    job = fake.add_job("queued", name="dr-sweep", sweep_id="5eed" + "0" * 28,
                       grid_point={"pretrain.dr.weight": 0.1, "seed": 0})
    shown = drtrain("jobs", "get", job["id"]).stdout
    assert "dr-sweep pretrain.dr.weight=0.1 seed=0" in shown
    assert "5eed" + "0" * 28 in shown
    alone = fake.add_job("queued", name="alone", sweep_id=None, grid_point=None)
    assert "sweep" not in drtrain("jobs", "get", alone["id"]).stdout


def test_an_id_typed_in_capitals_names_the_same_id(fake: FakeApi) -> None:
    sweep = _sweep(fake, "succeeded")
    for typed in (sweep["id"].upper(), "5EED"):
        result = drtrain("sweeps", "get", typed, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["id"] == sweep["id"]
