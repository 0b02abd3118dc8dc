"""The study's floor: multinomial logistic regression on the labelled training rows, computed
locally with scikit-learn (not through the service).

For each test seed it fits on exactly the rows a service job of that seed trains on: the
service's own validation split (drtrain.jobs.validation_split, the job's seed) is applied here,
and the unlabelled rows are left out."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from drtrain.jobs.validation_split import split_validation
from drtrain_study.data import StudyData

DESCRIPTION = ("scikit-learn LogisticRegression (multinomial, lbfgs, default C = 1, max_iter 1000), computed "
               "locally, not through the service, on the labelled training rows of each test seed (the "
               "service's validation split for that seed, reproduced with drtrain.jobs.validation_split)")


def labelled_training_rows(data: StudyData, seed: int) -> np.ndarray:
    train, _ = split_validation(data.y, data.validation_fraction, seed)
    return train[data.y[train] >= 0]


def logreg_errors(data: StudyData, seeds: int) -> list[float]:
    """Test error per seed 0 .. seeds - 1 (lbfgs is deterministic: seeds differ by their rows)."""
    errors = []
    for seed in range(seeds):
        rows = labelled_training_rows(data, seed)
        with warnings.catch_warnings():
            # An unconverged fit at max_iter is still the floor the brief asks for; say nothing.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(max_iter=1000).fit(data.X[rows], data.y[rows])
        errors.append(1.0 - float(model.score(data.X_test, data.y_test)))
    return errors
