"""Which rows of a job's training data are held out for validation: a seeded permutation of the
labelled rows (the spec's seed), so every attempt of a job, a resumed one in particular, trains
on exactly the same rows. The worker splits with it; the study reproduces a job's split with it
to fit its local floor on the same rows, without importing the worker."""
from __future__ import annotations

import numpy as np

from drtrain.jobs.warnings import validation_rows


def split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): ``fraction`` of the *labelled* rows (label >= 0) held out.

    A row without a label cannot be scored, so it always stays in training, where pretraining
    uses it; with every row labelled this is a plain seeded split. At least one training row
    is always kept (drtrain.jobs.warnings.validation_rows counts the same)."""
    n = len(y)
    labelled = np.flatnonzero(np.asarray(y) >= 0)
    n_val = validation_rows(len(labelled), n, fraction)
    val = labelled[np.random.default_rng(seed).permutation(len(labelled))[:n_val]]
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), np.sort(val)
