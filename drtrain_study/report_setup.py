"""The report's setup and tuning sections: what ran, the budget compromises (generated from the
plan values, against the fully protocolled regime) and every arm's tuning grid and choice."""
from __future__ import annotations

from typing import TYPE_CHECKING

from drtrain_study.logreg import DESCRIPTION as LOGREG
from drtrain_study.runs import ARM_BY_KEY

if TYPE_CHECKING:
    from drtrain_study.records import Choice, DatasetOutcome, DatasetPlan, Study


def _grid(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _protocol(plan: DatasetPlan) -> str:
    b = plan.budget
    deep = any(ARM_BY_KEY[a].deep for a in plan.arms)
    return (f"hidden {list(b.hidden)}" + (f" (deep arms {list(b.deep_hidden)})" if deep else "")
            + f"; pretraining CD-1, {b.pretrain_epochs} epochs per layer, batch {b.pretrain_batch}, lr "
            f"{b.pretrain_lr:g}, side rows {b.side_rows} per batch in \"+ side rows\" arms; fine-tuning "
            f"{b.finetune_epochs} epochs, batch {b.finetune_batch}, momentum {b.finetune_momentum:g}; "
            f"lr grid {_grid(plan.lr_grid)}, lambda grid {_grid(plan.weight_grid)} (DR arms); "
            f"{len(plan.sweep_seeds)} sweep seed(s) {list(plan.sweep_seeds)}; test seeds 0..{plan.seeds - 1}")


def _differences(plan: DatasetPlan, ref: DatasetPlan) -> list[str]:
    b, rb = plan.budget, ref.budget
    items = (("hidden layers", list(b.hidden), list(rb.hidden)),
             ("pretraining epochs per layer", b.pretrain_epochs, rb.pretrain_epochs),
             ("pretraining batch", b.pretrain_batch, rb.pretrain_batch),
             ("pretraining lr", b.pretrain_lr, rb.pretrain_lr),
             ("fine-tuning epochs", b.finetune_epochs, rb.finetune_epochs),
             ("fine-tuning batch", b.finetune_batch, rb.finetune_batch),
             ("sweep seeds", len(plan.sweep_seeds), len(ref.sweep_seeds)),
             ("test seeds", plan.seeds, ref.seeds),
             ("lr grid", _grid(plan.lr_grid), _grid(ref.lr_grid)),
             ("lambda grid", _grid(plan.weight_grid), _grid(ref.weight_grid)))
    out = [f"{name} {value} instead of {wanted}" for name, value, wanted in items if value != wanted]
    missing = [a for a in ref.arms if a not in plan.arms]
    if missing:
        out.append("arms " + ", ".join(missing) + " not run")
    return out


def compromises(study: Study) -> list[str]:
    """Budget compromises, stated from the plan values against the protocolled regime's."""
    plans = [o.plan for o in study.outcomes]
    ref = next((p for p in plans if p.protocol), None)
    lines = ["Budget compromises (from the plan values):", ""]
    for plan in plans:
        if plan is ref:
            continue
        diffs = _differences(plan, ref) if ref else []
        against = f" compared with {ref.name}'s protocol" if ref else ""
        lines.append(f"- **{plan.name}** runs a reduced protocol{against}: "
                     + ("; ".join(diffs) or "none") + ".")
    lines.append(f"- The logistic-regression floor is {LOGREG}.")
    if any(len(p.sweep_seeds) == 1 for p in plans):
        one = ", ".join(p.name for p in plans if len(p.sweep_seeds) == 1)
        lines.append(f"- One sweep seed in {one}: its settings are chosen on a single validation run "
                     "per grid point, so they are noisier than where several seeds are averaged.")
    return lines + [""]


def setup(study: Study) -> list[str]:
    arms = [k for k in ARM_BY_KEY if any(k in o.plan.arms for o in study.outcomes)]
    lines = ["## Setup", "",
             f"Every arm is a job of {study.service}, submitted over HTTP with drtrain_client: each "
             "arm's tuning grid and its test seeds are sweeps (`POST /v1/sweeps`), and every number below "
             "(but the logistic-regression floor) comes from the jobs' results and metric points as the API "
             "returns them.",
             "", "Arms (all sigmoid networks, SGD with momentum, softmax head):", ""]
    lines += [f"- `{k}`: {ARM_BY_KEY[k].label}" + _controls(k) for k in arms]
    lines += ["", "Side information is the class label; unlabelled rows have none and take part in the "
              "likelihood but in no DR pair. \"+ side rows\" arms make every pretraining batch hold at least "
              "the stated number of labelled rows from two or more groups "
              "(`pretrain.side_rows_per_batch`), so DR has cross-group pairs to push apart; the pairs per "
              "batch column shows what each arm got.", ""]
    for outcome in study.outcomes:
        lines.append(f"- **{outcome.name}**: {outcome.description}. Arms {', '.join(outcome.plan.arms)}; "
                     f"{_protocol(outcome.plan)}.")
    return lines + [""] + compromises(study)


def _controls(arm_key: str) -> str:
    arm = ARM_BY_KEY[arm_key]
    if not arm.is_dr:
        return ""
    refs = [r for r in (arm.control, arm.glorot, *arm.also) if r]
    return " (compared with " + ", ".join(f"`{r}`" for r in dict.fromkeys(refs)) + ")"


def lambda_text(choice: Choice) -> str:
    if choice.weight is None:
        return "—"
    return "0 (tuning switched DR off)" if choice.dr_off else f"{choice.weight:g}"


def tuning(outcome: DatasetOutcome) -> list[str]:
    """Chosen settings, flags, then every grid cell's mean validation score."""
    plan = outcome.plan
    lines = [f"**{outcome.name}**: selection score = mean validation error of the last 3 epochs, "
             f"averaged over sweep seeds {list(plan.sweep_seeds)}; ties to the smaller lambda, "
             "then the smaller lr.", "",
             "| arm | chosen lr | chosen lambda | mean val error % | flags |", "|---|---|---|---|---|"]
    for arm in plan.arms:
        c = outcome.choices[arm]
        flags = ", ".join(["edge of grid: " + "; ".join(c.edges)] if c.edges else [])
        lines.append(f"| `{arm}` | {c.learning_rate:g} | {lambda_text(c)} | {100 * c.score:.2f} | {flags} |")
    off = [a for a in plan.arms if outcome.choices[a].dr_off]
    switched_off = ", ".join(f"`{a}`" for a in off) or "none"
    lines += ["", f"Tuning switched DR off (chose lambda = 0) for: {switched_off}.", "",
              *_grid_table(outcome), ""]
    return lines


def _grid_table(outcome: DatasetOutcome) -> list[str]:
    lrs = outcome.plan.lr_grid
    lines = ["Every grid cell (mean val error %; * = chosen; \"= arm\" = the same job as that arm's):", "",
             "| arm | lambda | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
             "|---|---|" + "---|" * len(lrs)]
    rows: dict[tuple[str, float | None], dict[float, str]] = {}
    for cell in outcome.cells:
        c = outcome.choices[cell.arm]
        mark = "*" if (cell.learning_rate, cell.weight) == (c.learning_rate, c.weight) else ""
        shared = f" (= {cell.shared_from})" if cell.shared_from else ""
        by_lr = rows.setdefault((cell.arm, cell.weight), {})
        by_lr[cell.learning_rate] = f"{100 * cell.score:.2f}{mark}{shared}"
    for (arm, weight), by_lr in rows.items():
        lam = "—" if weight is None else f"{weight:g}"
        lines.append(f"| `{arm}` | {lam} | " + " | ".join(by_lr.get(lr, "") for lr in lrs) + " |")
    return lines
