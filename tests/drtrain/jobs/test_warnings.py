"""A job's warnings (``drtrain.jobs.warnings``): when DR warns, the validation rows it counts are
the worker's split, and merged warnings keep their order."""
from __future__ import annotations

import numpy as np

from drtrain.jobs.spec import JobSpec
from drtrain.jobs.warnings import merge, training_warnings, validation_rows


def _spec(**kw: object) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": "builtin:digits", **kw})


def test_dr_with_a_single_group_warns_only_when_dr_is_on() -> None:
    counts = {"a": 50, "b": 50}
    assert any("single group" in w for w in training_warnings(
        _spec(), n_rows=100, n_val=10, class_counts=counts, n_groups=1))
    off = _spec(pretrain={"dr": None}, finetune={"dr": None})
    assert training_warnings(off, n_rows=1000, n_val=100, class_counts=counts, n_groups=1) == []
    assert training_warnings(_spec(), n_rows=1000, n_val=100, class_counts=counts,
                             n_groups=None) == []


def test_validation_rows_matches_the_workers_split() -> None:
    from drtrain.jobs.validation_split import split_validation

    for n, f in [(2, 0.1), (10, 0.1), (1797, 0.1), (5, 0.5), (7, 0.0)]:
        _, val = split_validation(np.zeros(n, dtype=np.int64), f, 0)
        assert validation_rows(n, n, f) == len(val)


def test_validation_is_drawn_from_labelled_rows_only() -> None:
    from drtrain.jobs.validation_split import split_validation

    y = np.full(1000, -1, dtype=np.int64)
    y[::10] = np.arange(100) % 5  # 100 labelled rows of 1000
    train, val = split_validation(y, 0.2, 3)
    assert len(val) == 20 == validation_rows(100, 1000, 0.2)
    assert (y[val] >= 0).all()
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    # every unlabelled row stays in training (pretraining uses it)
    assert set(np.flatnonzero(y < 0)) <= set(train.tolist())
    # with every row labelled the split is the plain seeded permutation it always was
    perm = np.random.default_rng(3).permutation(50)
    _, val_all = split_validation(np.zeros(50, dtype=np.int64), 0.2, 3)
    assert val_all.tolist() == sorted(perm[:10].tolist())


def test_merge_keeps_order_and_drops_repeats() -> None:
    assert merge(["a", "b"], ["b", "c"]) == ["a", "b", "c"]
    assert merge(None, ["x"]) == ["x"]
