"""What the study runs: its regimes, each with its test seeds, budget, arms and tuning grids, in
the full configuration and in the quick smoke configuration of the same path."""
from __future__ import annotations

import dataclasses

from drtrain_study.records import DatasetPlan, StudyConfig
from drtrain_study.runs import ARMS, Budget

LEARNING_RATES = (0.03, 0.1, 0.3)
LAMBDAS = (0.0, 0.1, 1.0, 10.0)
# Reduced for two CPU cores: pretraining on 60,000 rows is what costs, so fewer, larger batches
# and epochs, two hidden layers, the arms that answer the main question, one sweep seed.
FASHION_BUDGET = Budget(hidden=(256, 256), pretrain_epochs=10, pretrain_batch=128, finetune_epochs=30,
                        finetune_batch=32)
FASHION_ARMS = ("glorot", "dbn", "dbn_sr", "dr", "dr_sr")
PLANS = {
    "digits-10pct": DatasetPlan("digits-10pct", 10, Budget(), tuple(a.key for a in ARMS), LEARNING_RATES,
                                LAMBDAS, (1000, 1001, 1002), protocol=True),
    "fashion-1pct": DatasetPlan("fashion-1pct", 5, FASHION_BUDGET, FASHION_ARMS, LEARNING_RATES, LAMBDAS,
                                (1000,)),
    "fashion-10pct": DatasetPlan("fashion-10pct", 5, FASHION_BUDGET, FASHION_ARMS, LEARNING_RATES, LAMBDAS,
                                 (1000,)),
}
DEFAULT_REGIMES = ("digits-10pct", "fashion-1pct")
QUICK_BUDGET = Budget(hidden=(32, 32), deep_hidden=(16,) * 6, pretrain_epochs=2, finetune_epochs=8)
QUICK_SEEDS = 2


def full_config(regimes: list[str], seeds: dict[str, int]) -> StudyConfig:
    return StudyConfig("full", tuple(dataclasses.replace(PLANS[name], seeds=seeds[name]) for name in regimes))


def quick_config(regimes: list[str], seeds: dict[str, int]) -> StudyConfig:
    plans = tuple(dataclasses.replace(PLANS[name], seeds=seeds[name], budget=QUICK_BUDGET, lr_grid=(0.1,),
                                      weight_grid=(0.0, 1.0), sweep_seeds=(1000,)) for name in regimes)
    return StudyConfig("quick", plans)


def parse_seeds(text: str | None, regimes: list[str], quick: bool) -> dict[str, int]:
    """Test seeds per regime from ``--seeds``: absent (each plan's own, or the quick count), one
    number for every regime, or ``name=N`` pairs (the others keep their plan's)."""
    if text is None:
        return {name: (QUICK_SEEDS if quick else PLANS[name].seeds) for name in regimes}
    if "=" not in text:
        return {name: int(text) for name in regimes}
    pairs = dict(item.split("=", 1) for item in text.split(","))
    return {name: int(pairs.get(name, PLANS[name].seeds)) for name in regimes}
