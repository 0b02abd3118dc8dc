"""How many CPU threads a training process takes (worker/threads.py), and what ``drtrain up``
hands its workers."""
from drtrain_cli.embedded import workers_env
from worker.threads import host_cpus, training_threads


def test_the_cpus_are_shared_out_among_the_jobs_run_at_once():
    assert training_threads(0, 1, 8, environ={}) == 8
    assert training_threads(0, 2, 8, environ={}) == 4
    assert training_threads(0, 3, 8, environ={}) == 2
    assert training_threads(0, 4, 2, environ={}) == 1  # never 0


def test_an_operators_choice_wins():
    assert training_threads(3, 2, 8, environ={}) == 3
    assert training_threads(3, 2, 8, environ={"OMP_NUM_THREADS": "1"}) == 3
    # OMP_NUM_THREADS is torch's own setting: leave torch alone
    assert training_threads(0, 2, 8, environ={"OMP_NUM_THREADS": "6"}) is None


def test_host_cpus_is_what_this_process_may_run_on():
    assert 1 <= host_cpus() <= (__import__("os").cpu_count() or 1)


def test_drtrain_up_gives_each_worker_its_share():
    cpus = host_cpus()
    env = workers_env({"PATH": "/bin"}, 2)
    assert env["DRTRAIN_TORCH_THREADS"] == str(max(1, cpus // 2))
    assert env["PATH"] == "/bin"
    assert workers_env({}, 1)["DRTRAIN_TORCH_THREADS"] == str(cpus)


def test_drtrain_up_keeps_the_operators_thread_count():
    assert workers_env({"DRTRAIN_TORCH_THREADS": "5"}, 2) == {"DRTRAIN_TORCH_THREADS": "5"}
    assert workers_env({"OMP_NUM_THREADS": "1"}, 2) == {"OMP_NUM_THREADS": "1"}


def test_a_worker_notes_its_pool_size_before_its_children_fork(monkeypatch):
    from types import SimpleNamespace

    from worker import celery_app

    monkeypatch.setattr(celery_app, "_jobs_at_once", 1)
    celery_app._note_pool_size(SimpleNamespace(concurrency=3))
    assert celery_app.jobs_at_once() == 3
    # --concurrency=auto is resolved later: one job per CPU, one thread each
    celery_app._note_pool_size(SimpleNamespace(concurrency="auto"))
    assert celery_app.jobs_at_once() == host_cpus()
