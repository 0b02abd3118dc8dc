"""pretrain.side_rows_per_batch in the JobSpec: its bounds, and the warning that suggests it when
side values are scarce."""
from __future__ import annotations

import pytest

from drtrain.jobs.spec import JobSpec
from drtrain.jobs.warnings import training_warnings


def _spec(**pretrain) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": "builtin:digits",
                                   "pretrain": {"batch_size": 128, **pretrain}})


def _warnings(spec: JobSpec, n_rows: int, n_with_side: int) -> list[str]:
    return training_warnings(spec, n_rows=n_rows, n_val=0, class_counts={}, n_groups=None,
                             n_labelled=n_with_side, n_with_side=n_with_side)


def test_scarce_side_values_warn_and_name_the_field():
    warned = [w for w in _warnings(_spec(), 60_000, 600) if "side_rows_per_batch" in w]
    assert len(warned) == 1
    assert "1% of rows" in warned[0] and "batch of 128" in warned[0] and "for example 32" in warned[0]


@pytest.mark.parametrize("pretrain,n_with_side", [({"side_rows_per_batch": 32}, 600),
                                                  ({"dr": None}, 600),
                                                  ({}, 30_000)])
def test_no_starvation_warning_when_side_rows_are_set_dr_is_off_or_values_are_plenty(pretrain, n_with_side):
    assert not [w for w in _warnings(_spec(**pretrain), 60_000, n_with_side) if "side_rows_per_batch" in w]


@pytest.mark.parametrize("rows", [-1, 4097, 1.5, "8"])
def test_out_of_range_values_are_refused(rows):
    with pytest.raises(ValueError):
        _spec(side_rows_per_batch=rows)
