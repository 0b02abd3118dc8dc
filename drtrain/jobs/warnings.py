"""What looks wrong with a job's spec on its data, said before it trains quietly and badly.

One pure function serves both moments: at submit, from the dataset's stored facts (the
groups DR uses are known only when they are the labels), and in the worker, from the real
split; the job carries the union (``jobs.warnings``), shown by the API, the CLI and the app.
"""
from __future__ import annotations

from collections.abc import Mapping

from drtrain.jobs.spec import JobSpec, resolve_batch_size

# Below this share of rows with a side value, random pretraining batches are mostly without a
# cross-group pair (at 1 %, about three batches of 128 in four), and DR is starved.
SCARCE_SIDE_SHARE = 0.2


def validation_rows(n_labelled: int, n_rows: int, fraction: float) -> int:
    """Rows the worker holds out: ``fraction`` of the labelled rows, keeping >= 1 training row
    (drtrain.jobs.validation_split)."""
    if fraction <= 0 or n_rows <= 0:
        return 0
    return max(0, min(int(round(n_labelled * fraction)), n_rows - 1))


def _dr_on(spec: JobSpec) -> bool:
    pre = spec.pretrain.dr if spec.pretrain else None
    fine = spec.finetune.dr if spec.finetune else None
    return any(dr is not None and dr.weight > 0 for dr in (pre, fine))


def training_warnings(spec: JobSpec, *, n_rows: int, n_val: int, class_counts: Mapping[str, int],
                      n_groups: int | None, n_labelled: int | None = None,
                      n_with_side: int | None = None) -> list[str]:
    """Plain sentences, each naming the field to change; ``n_groups`` None when unknown.
    ``n_labelled`` and ``n_with_side`` (the dataset's, given at submit) add what fine-tuning
    and DR will use when some rows lack a label or a side value."""
    out: list[str] = _partial_rows(spec, n_rows, n_labelled, n_with_side)
    if spec.validation_fraction > 0 and n_val == 0:
        out.append(f"validation_fraction {spec.validation_fraction} of {n_rows} rows leaves an "
                   "empty validation set: no validation loss or accuracy will be reported")
    n_train = n_rows - n_val
    for phase, section in (("pretrain", spec.pretrain), ("finetune", spec.finetune)):
        if section is not None and section.epochs > 0 and section.batch_size != "auto" \
                and n_train < section.batch_size:
            out.append(f"{phase}.batch_size {section.batch_size} is more than the {n_train} "
                       "training rows: each epoch is a single smaller batch")
    singles = sorted(str(c) for c, n in class_counts.items() if n == 1)
    if singles:
        shown = ", ".join(singles[:5]) + (", ..." if len(singles) > 5 else "")
        out.append(f"{len(singles)} class(es) have a single example ({shown}): they cannot be "
                   "both trained on and validated")
    if _dr_on(spec) and n_groups is not None and n_groups < 2:
        out.append("DR is on but the training rows carry a single group: DR only compares "
                   "examples of different groups, so it has no effect (set dr to null, or give "
                   "a side_info_column with several groups)")
    return out


def _partial_rows(spec: JobSpec, n_rows: int, n_labelled: int | None,
                  n_with_side: int | None) -> list[str]:
    out = []
    if spec.finetune is not None and n_labelled is not None and 0 < n_labelled < n_rows:
        held = (", and validation_fraction holds out a share of those labelled rows"
                if spec.validation_fraction else "")
        also = "; pretraining uses all of them" if spec.pretrain is not None else ""
        out.append(f"finetune uses only the {n_labelled} labelled rows of the {n_rows} in the "
                   f"dataset (the rest have no label){held}{also}")
    if _dr_on(spec) and n_with_side is not None and 0 < n_with_side < n_rows:
        out.append(f"dr pairs only the {n_with_side} rows of the {n_rows} in the dataset that "
                   "carry a side value; the others still train, but never enter a DR pair")
        out.extend(_starved_batches(spec, n_rows, n_with_side))
    return out


def _starved_batches(spec: JobSpec, n_rows: int, n_with_side: int) -> list[str]:
    """Pretraining DR on scarce side values without side rows per batch."""
    pre = spec.pretrain
    if pre is None or pre.dr is None or pre.dr.weight == 0 or pre.side_rows_per_batch:
        return []
    share = n_with_side / n_rows
    if share >= SCARCE_SIDE_SHARE:
        return []
    batch = resolve_batch_size(pre.batch_size, n_rows)
    return [f"only {100 * share:.3g}% of rows carry a side value: a random pretraining batch of "
            f"{batch} holds about {batch * share:.2g} of them, often no cross-group pair, so "
            f"generative DR acts on few rows; set pretrain.side_rows_per_batch (for example "
            f"{max(2, batch // 4)}) to put that many rows with a side value in every batch, or "
            f"sweep a larger pretrain.dr.weight (docs/dr.md)"]


def merge(existing: list[str] | None, new: list[str]) -> list[str]:
    """The union, in first-seen order."""
    seen = list(existing or [])
    return seen + [w for w in new if w not in seen]
