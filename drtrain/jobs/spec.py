"""JobSpec: the body of ``POST /v1/jobs``, the one source of every default and bound.

Field names follow dr_core/config.py (RBMConfig, FinetuneConfig, PosteriorDRConfig,
FeatureDRConfig) so the worker can map a stored spec onto configs one to one. The choices
(divergence, distance, normalize, units, optimizer, activation, init, precision) are
dr_core/config.py's names: copied, since the domain may not import dr_core, and held equal to
them by tests/test_lists.py. The web form reads them from the OpenAPI schema.
Bounds here are the service's limits, tighter than dr_core's own checks.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from drtrain.kit.ids import ID_PATTERN

MAX_PARAMETERS = 50_000_000
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
# Printable text without control characters (PostgreSQL cannot store NUL; none belongs in a name).
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without numpy here


class RequestModel(BaseModel):
    """A request body, or a section of one: unknown fields are refused and every type is
    strict, as the OpenAPI document states it. An integer field takes only a JSON integer
    (not "7", 7.0 or true), a boolean only true or false (not 0, 1 or "true"), a string only
    a string; a float field still takes a JSON integer (1 is a number). Literal choices are
    strings in JSON and match as such. JSON read back from the database parses the same way,
    so the worker's stored specs and a sweep's grid values (both plain JSON) still validate.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


class SampledPairs(RequestModel):
    """K random cross-group partners per example instead of every pair."""

    sample: int = Field(ge=1, le=1024, examples=[16],
                        description="Partners drawn per example from the other groups of its "
                                    "mini-batch (an unbiased estimate of the all-pairs mean).")


def _pairs_in_words(value: Any) -> Any:
    """A ``pairs`` of neither shape is one sentence: the union's own errors name its branches
    (``literal['all']``, ``SampledPairs``), neither of which was meant. An object goes on to
    the union, whose errors about ``sample`` keep their types (the API's detail names the
    branch that was meant: api/problems.py)."""
    if value == "all" or isinstance(value, (dict, SampledPairs)):
        return value
    raise ValueError(f'must be "all" or {{"sample": K}} (K partners per row, 1 to 1024); '
                     f"got {value!r}")


Pairs = Annotated[Literal["all"] | SampledPairs, BeforeValidator(_pairs_in_words)]
BatchSize = Literal["auto"] | Annotated[int, Field(ge=1, le=8192)]
_BATCH = ('Mini-batch size, or "auto": about 100 updates per epoch, a power of two between 16 and '
          "128 (16 for builtin:digits, 128 for Fashion-MNIST), never more than the training rows.")


def resolve_batch_size(value: BatchSize, n_train: int) -> int:
    """"auto" -> n_train / 100 rounded down to a power of two, within [16, 128] and n_train:
    small sets get enough updates to learn, large ones keep the GPU's batches large."""
    if value != "auto":
        return int(value)
    target = max(n_train // 100, 1)
    power = 1 << (target.bit_length() - 1)
    return max(1, min(128, max(16, power), n_train))
_PAIRS = ('"all" (every cross-group pair of the mini-batch, exact and, for hellinger, jeffreys, '
          'euclidean and cosine, in closed form) or {"sample": K}.')
_NORMALIZE = ('"sum": the divergence summed over hidden units; "per_unit": averaged over them '
              '(weights then transfer across layer widths).')


class PretrainDR(RequestModel):
    """Generative DR: a divergence between hidden posteriors of examples of different groups,
    added to each RBM's likelihood as a prior (docs/dr.md)."""

    weight: float = Field(1.0, ge=0.0, le=1e4, examples=[1.0],
                          description="lambda; 0 turns generative DR off.")
    divergence: Literal["hellinger", "jeffreys", "bhattacharyya", "jensen_shannon"] = Field(
        "hellinger", examples=["hellinger"],
        description="Divergence between the factorised Bernoulli posteriors of two examples.")
    pairs: Pairs = Field("all", examples=["all"], description=_PAIRS)
    normalize: Literal["sum", "per_unit"] = Field("sum", examples=["sum"], description=_NORMALIZE)


class FinetuneDR(RequestModel):
    """Discriminative DR: a distance between hidden features of examples of different groups,
    added to the classification loss (docs/dr.md)."""

    weight: float = Field(0.1, ge=0.0, le=1e4, examples=[0.1],
                          description="lambda; 0 turns feature DR off.")
    distance: Literal["euclidean", "cosine"] = Field(
        "euclidean", examples=["euclidean"], description="Distance between feature vectors.")
    layers: Literal["all"] | Annotated[list[Annotated[int, Field(ge=0, le=7)]],
                                       Field(min_length=1, max_length=8)] = Field(
        "all", examples=["all", [0]],
        description='Hidden layers (0-based) whose features are diversified, or "all".')
    pairs: Pairs = Field("all", examples=["all"], description=_PAIRS)
    normalize: Literal["sum", "per_unit"] = Field("per_unit", examples=["per_unit"],
                                                  description=_NORMALIZE)


class ModelSpec(RequestModel):
    hidden_layers: Annotated[list[Annotated[int, Field(ge=1, le=8192)]],
                             Field(min_length=1, max_length=8)] = Field(
        [500, 500], examples=[[500, 500]],
        description="Widths of the hidden layers, bottom first: one RBM each in pretraining, "
                    "the MLP's hidden stack in fine-tuning (a softmax head is added).")
    visible_units: Literal["auto", "bernoulli", "gaussian"] = Field(
        "auto", examples=["auto"],
        description='First RBM\'s visible units: "bernoulli" needs data in [0, 1]; "auto" picks '
                    "bernoulli when every value lies there, else gaussian.")


class PretrainSpec(RequestModel):
    """Greedy layer-wise DBN pretraining: one RBM per hidden layer, trained with CD-k or PCD."""

    epochs: int = Field(5, ge=0, le=1000, examples=[5], description="Epochs per RBM layer.")
    batch_size: BatchSize = Field("auto", examples=["auto", 128], description=_BATCH)
    learning_rate: float = Field(0.05, gt=0.0, le=10.0, examples=[0.05],
                                 description="SGD step on the CD gradient.")
    cd_k: int = Field(1, ge=1, le=50, examples=[1],
                      description="Gibbs steps of the negative phase (CD-k).")
    persistent: bool = Field(False, examples=[False],
                             description="Persistent contrastive divergence (PCD): the negative "
                                         "chains carry over between mini-batches.")
    momentum: float = Field(0.5, ge=0.0, le=0.999, examples=[0.5],
                            description="Momentum for the first epochs (Hinton's schedule).")
    final_momentum: float = Field(0.9, ge=0.0, le=0.999, examples=[0.9],
                                  description="Momentum after the switch epoch.")
    weight_decay: float = Field(0.0002, ge=0.0, le=1.0, examples=[0.0002],
                                description="L2 penalty on the weights.")
    side_rows_per_batch: int | None = Field(
        None, ge=0, le=4096, examples=[None, 32],
        description="Rows that carry a side value in every pretraining mini-batch, drawn in "
                    "turn from each group; the rest of the batch is drawn from all rows and an "
                    "epoch still visits every row. With few rows labelled, random batches hold "
                    "few cross-group pairs and DR has little to work on. 0 or null: plain "
                    "shuffled batches. Must be below the batch size.")
    dr: PretrainDR | None = Field(default_factory=PretrainDR,
                                  description="Generative DR; null turns it off.")

    @model_validator(mode="after")
    def _side_rows_fit(self) -> PretrainSpec:
        rows = self.side_rows_per_batch or 0
        if rows and self.batch_size != "auto" and rows >= self.batch_size:
            raise ValueError(f"side_rows_per_batch ({rows}) must be below batch_size "
                             f"({self.batch_size})")
        return self


class FinetuneSpec(RequestModel):
    """Supervised training of the MLP (the pretrained stack, or a random one, plus softmax)."""

    epochs: int = Field(20, ge=0, le=1000, examples=[20], description="Fine-tuning epochs.")
    batch_size: BatchSize = Field("auto", examples=["auto", 128], description=_BATCH)
    optimizer: Literal["sgd", "adam"] = Field("sgd", examples=["sgd"], description="Optimiser.")
    learning_rate: float = Field(0.1, gt=0.0, le=10.0, examples=[0.1], description="Step size.")
    momentum: float = Field(0.9, ge=0.0, le=0.999, examples=[0.9],
                            description="SGD momentum (ignored by adam).")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, examples=[0.0],
                                description="L2 penalty on the weights.")
    activation: Literal["sigmoid", "tanh", "relu"] = Field(
        "sigmoid", examples=["sigmoid"],
        description="Hidden activation; sigmoid matches the RBMs a DBN was pretrained as.")
    init: Literal["glorot", "normal"] = Field(
        "glorot", examples=["glorot", "normal"],
        description='Random initialisation of every weight matrix not taken from pretraining '
                    '(the hidden layers when pretrain is null, and the softmax head): "glorot" '
                    'uniform with a gain by activation (4 for sigmoid), or "normal" N(0, '
                    'init_std^2), the classic small initialisation under which deep sigmoid '
                    'nets stop learning (the vanishing-gradient setting). Biases start at 0.')
    init_std: float = Field(0.01, gt=0.0, le=1.0, examples=[0.01],
                            description='Standard deviation of the "normal" initialisation '
                                        '(ignored by "glorot").')
    # Off by default: docs/study.md found feature DR no better, or worse, on test error.
    dr: FinetuneDR | None = Field(None, examples=[{"weight": 0.1, "distance": "euclidean"}],
                                  description="Feature DR; null (the default) turns it off.")


# The defaults, spelled out (tests/drtrain/jobs/test_spec.py holds them equal).
JOB_SPEC_EXAMPLE: dict[str, Any] = {
    "name": None,
    "tags": [],
    "dataset_id": "builtin:digits",
    "test_dataset_id": None,
    "validation_fraction": 0.1,
    "model": {"hidden_layers": [500, 500], "visible_units": "auto"},
    "pretrain": {"epochs": 5, "batch_size": "auto", "learning_rate": 0.05, "cd_k": 1,
                 "persistent": False, "momentum": 0.5, "final_momentum": 0.9,
                 "weight_decay": 0.0002, "side_rows_per_batch": None,
                 "dr": {"weight": 1.0, "divergence": "hellinger", "pairs": "all"}},
    "finetune": {"epochs": 20, "batch_size": "auto", "optimizer": "sgd", "learning_rate": 0.1,
                 "momentum": 0.9, "weight_decay": 0.0, "activation": "sigmoid",
                 "init": "glorot", "init_std": 0.01, "dr": None},
    "seed": 0, "device": "auto", "precision": "fp32", "max_runtime_seconds": 86400,
    "max_attempts": 3,
}


class JobSpec(RequestModel):
    """What to train. Checked in two steps: here (shape and bounds) and at submit against the
    dataset (existence, visible units, parameter count), both answering 422."""

    # The document states the one cross-field rule it can: not both sections null.
    model_config = ConfigDict(json_schema_extra={
        "examples": [JOB_SPEC_EXAMPLE],
        "not": {"required": ["pretrain", "finetune"],
                "properties": {"pretrain": {"type": "null"}, "finetune": {"type": "null"}}}})

    name: str | None = Field(None, min_length=1, max_length=200, pattern=NAME_PATTERN,
                             examples=["digits, hellinger 1.0"],
                             description="A label for people: shown in lists and comparisons.")
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] = Field(
        default_factory=list, max_length=16, examples=[["study", "hellinger"]],
        description="Up to 16 tags (letters, digits, . _ : -; at most 64 characters each); "
                    "GET /v1/jobs?tag=X lists the jobs carrying X.")
    dataset_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN,
                            examples=["builtin:digits"],
                            description="The training data: an id from POST /v1/datasets or a "
                                        "built-in (builtin:digits, builtin:fashion-mnist).")
    test_dataset_id: str | None = Field(
        None, min_length=1, max_length=64, pattern=ID_PATTERN, examples=[None],
        description="Held-out test data with the same features; null uses the built-in's test "
                    "split where it has one, else no test set.")
    validation_fraction: float = Field(
        0.1, ge=0.0, le=0.5, examples=[0.1],
        description="Share of the labelled training rows held out for validation (a seeded "
                    "split, the same in every attempt); rows without a label always stay in "
                    "training, where pretraining uses them.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The network's shape.")
    pretrain: PretrainSpec | None = Field(
        default_factory=PretrainSpec,
        description="DBN pretraining; null trains the MLP from random initialisation.")
    finetune: FinetuneSpec | None = Field(
        default_factory=FinetuneSpec, description="MLP fine-tuning; null stops after pretraining.")
    seed: int = Field(0, ge=0, le=2**31 - 1, examples=[0],
                      description="Seeds every random draw (split, init, sampling): the same "
                                  "seed, spec and device type give the same weights.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:[0-9]{1,2})$", examples=["auto"],
                        description='"auto" (CUDA when the worker has a GPU), "cpu", "cuda" or '
                                    '"cuda:N".')
    precision: Literal["fp32", "tf32"] = Field(
        "fp32", examples=["fp32"],
        description='Matrix products on a CUDA device: "fp32" (IEEE float32) or "tf32" '
                    '(TensorFloat-32: faster on Ampere and later GPUs, about 1e-3 relative '
                    'error per product). No effect on CPU.')
    max_runtime_seconds: int = Field(
        86400, ge=1, le=604800, examples=[86400],
        description="Wall-clock limit across attempts; past it the job fails with that reason.")
    # None: the server's DRTRAIN_MAX_ATTEMPTS, filled in at submit (the stored spec has the number).
    max_attempts: int | None = Field(
        None, ge=1, le=10, examples=[3],
        description="How often a job whose worker died is resumed; null takes the server's "
                    "DRTRAIN_MAX_ATTEMPTS.")

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.pretrain is None and self.finetune is None:
            raise ValueError("pretrain and finetune cannot both be null")
        dr = self.finetune.dr if self.finetune else None
        if dr is not None and dr.layers != "all":
            n = len(self.model.hidden_layers)
            bad = [i for i in dr.layers if i >= n]
            if bad:
                raise ValueError(f"finetune.dr.layers: indices {bad} out of range for {n} hidden layers")
        return self

    def parameter_count(self, n_features: int, n_classes: int) -> int:
        """Weights and biases of the hidden stack plus the softmax head (when finetuning)."""
        dims = [n_features, *self.model.hidden_layers]
        if self.finetune is not None:
            dims.append(max(n_classes, 1))
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The fully defaulted spec as plain JSON, as stored in ``jobs.spec``."""
    return spec.model_dump(mode="json")
