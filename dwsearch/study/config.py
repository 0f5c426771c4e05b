"""Study files (``studies/*.yaml``): one schema, validated before anything runs.

The schema is a pydantic model, strict (a boolean is ``true``/``false``, an integer is not
``1.5`` or ``"1"``, numbers are finite) and closed (an unknown key is an error with a
did-you-mean). ``dwsearch schema`` prints it as JSON Schema for editor completion. The
``data`` and ``train`` sections are generated from :class:`~dwsearch.data.DataConfig` and
:class:`~dwsearch.train.TrainConfig`, so their defaults and choices are written once.

Every error names the file, the key path, the value found and what is allowed, in one line.
This module imports neither torch nor optuna; what needs them (building the base spec,
applying the space) happens in :mod:`dwsearch.study.space`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from dwsearch.arguments import checked, describe_found
from dwsearch.data.config import DataConfig
from dwsearch.errors import ConfigError, StudyError
from dwsearch.metrics import METRICS
from dwsearch.train.config import TrainConfig
from dwsearch.yamlio import load_yaml

__all__ = [
    "BOUNDS",
    "CLAIM_KINDS",
    "MAX_ENUMERATED",
    "MAX_INTEGER",
    "MAX_TRIALS",
    "SECOND_MODEL_KEY",
    "STUDY_FORMAT",
    "Bound",
    "Claim",
    "ClaimRule",
    "Claims",
    "Constraint",
    "Objective",
    "StudyConfig",
    "config_defaults",
    "json_schema",
    "load_study_config",
    "parse_claims",
    "parse_study_config",
]

# Version of the study file format. Older files are upgraded on load (see _upgrade); a file
# written for a newer dwsearch is refused with its version.
STUDY_FORMAT = 1

# From the one metrics table (dwsearch.metrics): objectives and their default directions,
# and the metrics known before training that constraints may bound.
METRIC_DIRECTIONS: Mapping[str, str] = {
    m.name: m.direction for m in METRICS.values() if m.objective}
CONSTRAINT_METRICS = tuple(m.name for m in METRICS.values() if m.constrainable)
_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Trials one study runs at most (n_trials, or configurations x repeats): every one is a slot
# laid out in the storage before anything trains.
MAX_TRIALS = 1_000_000
# Values one range may enumerate (grid, ablation); the space's limit on configurations is
# dwsearch.study.space.MAX_CONFIGURATIONS.
MAX_ENUMERATED = 10_000
# Every integer in a study file fits a signed 64-bit integer (what Optuna's storages, numpy
# and torch hold); beyond it nothing in a study has a meaning.
MAX_INTEGER = 2**63 - 1

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
P = ParamSpec("P")
R = TypeVar("R")


def _section(cls: type, exclude: tuple[str, ...], name: str, **more: Any) -> type[BaseModel]:
    """A strict pydantic model with the fields of the config dataclass ``cls``: same names,
    types, defaults and help (as descriptions), and ``more`` fields of the study's own."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in exclude:
            fields[f.name] = (hints[f.name], Field(default=f.default,
                                                   description=f.metadata.get("help")))
    model: type[BaseModel] = create_model(name, __config__=_STRICT, **fields, **more)
    model.__doc__ = cls.__doc__
    return model


class TeacherTrial(BaseModel):
    """A trial of a finished study as the teacher: its spec and the weights it kept."""

    model_config = _STRICT
    study: str = Field(description="The teacher's study name.")
    trial: int = Field(ge=0, le=MAX_INTEGER, description="Its trial number.")
    storage: str | None = Field(None, description="Its storage URL; default: this study's.")


class DistillSection(BaseModel):
    """Knowledge distillation (dwsearch.compress.distill): the loss mixes the labels' cross
    entropy (weight 1 - alpha) with alpha T^2 KL(teacher/T || student/T). alpha 0 is plain
    training: no teacher is loaded and the run is the undistilled one (a space may vary
    train.distill.alpha to compare both, paired by seed)."""

    model_config = _STRICT
    teacher: str | TeacherTrial = Field(
        description="A dwsearch checkpoint (relative to this file), a weights file with "
                    "teacher_spec, or {study: NAME, trial: N} (weights kept by that study).")
    teacher_spec: str | dict[str, Any] | None = Field(
        None, description="The teacher's spec where teacher holds only weights.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the teacher's soft targets.")
    temperature: float = Field(4.0, gt=0, le=100, description="Softening temperature T.")


# Seeds come from the study (seed, repeats, seeds); downloads are decided by the worker.
DataSection = _section(DataConfig, ("seed", "download"), "DataSection")
TrainSection = _section(TrainConfig, ("seed",), "TrainSection", distill=(
    DistillSection | None, Field(None, description="Train with a teacher (knowledge "
                                                   "distillation); default: none.")))
# Fields of the train: section that are the study's, not TrainConfig's.
STUDY_TRAIN_FIELDS = ("distill",)


Value = bool | int | float | str


class Choices(BaseModel):
    """A categorical dimension: one of ``choices``."""

    model_config = _STRICT
    choices: list[Value] = Field(min_length=1)
    per_layer: bool = Field(False, description="One choice per layer instead of one per group.")
    when: dict[str, Value] = Field(
        default_factory=dict, description="Apply only to layers whose arguments equal these.")


class Range(BaseModel):
    """A numeric dimension: integers when low, high (and step) are integers, else floats."""

    model_config = _STRICT
    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None
    per_layer: bool = False
    when: dict[str, Value] = Field(default_factory=dict)

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: float, info: Any) -> float:
        low = info.data.get("low")
        if low is not None and high < low:
            raise ValueError(f"high ({high}) must be >= low ({low})")
        return high

    @model_validator(mode="after")
    def _samplable(self) -> Range:
        """What Optuna would refuse when the first trial samples it, refused at load."""
        if self.step is not None and not self.step > 0:
            raise ValueError(f"step must be > 0, found {self.step}")
        if self.log and self.step is not None:
            raise ValueError("log: true cannot be combined with step (Optuna samples a log "
                             "scale only without a step); drop step, or list the values")
        if self.log and not self.low > 0:
            raise ValueError(f"log: true needs low > 0, found low {self.low}")
        if not math.isfinite(float(self.high) - float(self.low)):
            raise ValueError(f"the range {self.low}..{self.high} is wider than the largest "
                             f"float")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int))

    def count(self) -> int:
        """How many values :meth:`values` enumerates (more than :data:`MAX_ENUMERATED` is
        reported as ``MAX_ENUMERATED + 1``: it is refused anyway, and an exact count of a
        range like 1e-300..1 by 1e-300 would not fit a float)."""
        if self.step is None and not self.is_int:
            raise ValueError("a float range needs 'step' to be enumerated (grid, ablation)")
        step = 1 if self.step is None else self.step
        if step <= 0:
            raise ValueError(f"step must be > 0, found {step}")
        if self.is_int:  # exact, whatever the size
            return int(self.high - self.low) // int(step) + 1
        ratio = (float(self.high) - float(self.low)) / float(step)
        if not ratio < MAX_ENUMERATED:
            return MAX_ENUMERATED + 1
        return math.floor(ratio + 1e-9) + 1

    def values(self) -> list[int | float]:
        """The grid of this range (needs ``step`` unless it is a range of integers)."""
        count = self.count()
        if count > MAX_ENUMERATED:
            shown = f"{count:,}" if self.is_int else f"more than {MAX_ENUMERATED:,}"
            raise ValueError(f"{shown} values from {self.low} to {self.high}; at most "
                             f"{MAX_ENUMERATED:,} can be enumerated")
        step = 1 if self.step is None else self.step
        out = [self.low + i * step for i in range(count)]
        return [int(v) for v in out] if self.is_int else [round(v, 12) for v in out]


Dimension = Annotated[list[Value], Field(min_length=1)] | Choices | Range


class SamplerSection(BaseModel):
    """How configurations are chosen. tpe, nsga2 and random sample ``n_trials`` of them;
    grid enumerates every combination; ablation changes one factor at a time from the base."""

    model_config = _STRICT
    name: Literal["tpe", "nsga2", "random", "grid", "ablation"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="tpe: random trials before modelling.")
    population_size: int = Field(16, ge=2, description="nsga2: individuals per generation.")
    multivariate: bool = Field(True, description="tpe: model dimensions jointly.")


class PrunerSection(BaseModel):
    """Stopping unpromising trials early. Optuna's pruners (median, successive_halving,
    hyperband) work for one objective; cost_median works for any number (see README)."""

    model_config = _STRICT
    name: Literal["none", "median", "successive_halving", "hyperband", "cost_median"] = "none"
    warmup_epochs: int = Field(1, ge=0, description="Never prune before this many epochs.")
    startup_trials: int = Field(4, ge=0, description="median: finished trials before pruning.")
    min_trials: int = Field(4, ge=1, description="cost_median: peers needed to compare.")
    macs_ratio: float = Field(1.5, ge=1.0, description="cost_median: peers have MACs within "
                                                       "this factor of the trial's.")
    reduction_factor: int = Field(3, ge=2, description="successive_halving, hyperband.")
    min_epochs: int = Field(1, ge=1, description="successive_halving, hyperband: min resource.")


# -- claims: what a document says the study's models do, checked by the report ----------------

_QUANTITY = re.compile(r"^\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*"
                       r"(%|[kKMGT]?)\s*$")
# Claim kinds and the key of their second model: value (one model), ratio (of / to),
# difference (of - minus), speed (how many times as fast of is as over).
CLAIM_KINDS = ("value", "ratio", "difference", "speed")
SECOND_MODEL_KEY: Mapping[str, str | None] = {
    "value": None, "ratio": "to", "difference": "minus", "speed": "over"}
BOUNDS = ("between", "at_least", "at_most", "above", "below")
# Metrics a speed claim may compare: a rate (higher is faster) or a time (lower is faster).
SPEED_UNITS = ("images/s", "ms")
MAX_CLAIMS = 1000


def _quantity(value: Any) -> float:
    """A number of a claim's bound: 0.7, 70% (a fraction: accuracies are fractions, a
    difference of -3% is -3 points), 10M, 1.5K."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, a percentage like 70% or a count like 10M, "
                         f"found {describe_found(value)}")
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None:
            raise ValueError(f"expected a number, a percentage like 70% or a count like 10M, "
                             f"found {value!r}")
        # 70% is 70 / 100 (0.7 exactly), not 70 * 0.01 (0.7000000000000001)
        number = (float(match[1]) / 100 if match[2] == "%"
                  else float(match[1]) * _SUFFIX[match[2]])
    else:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    if not math.isfinite(number):
        shown = repr(value) if isinstance(value, str) else describe_found(value)
        raise ValueError(f"expected a finite number, found {shown}")
    return number


Quantity = Annotated[float, BeforeValidator(_quantity)]


def _alternatives(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


class _Rule(BaseModel):
    """One rule: a metric of one model (``of``), or of two, against one bound."""

    model_config = _STRICT
    metric: str = Field(description="A metric of the table: " + ", ".join(METRICS) + ".")
    of: str = Field(min_length=1, description="The model the claim is about (its spec name).")
    between: list[Quantity] | None = Field(None, description="[low, high], both included.")
    at_least: Quantity | None = None
    at_most: Quantity | None = None
    above: Quantity | None = None
    below: Quantity | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRICS:
            close = difflib.get_close_matches(metric, list(METRICS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown metric {metric!r}; {hint}allowed: {', '.join(METRICS)}")
        return metric

    @model_validator(mode="after")
    def _one_bound(self) -> _Rule:
        given = [b for b in BOUNDS if getattr(self, b) is not None]
        if len(given) != 1:
            raise ValueError(f"give one bound ({_alternatives(BOUNDS)}), found "
                             f"{' and '.join(given) or 'none'}")
        if self.between is not None:
            if len(self.between) != 2:
                raise ValueError(f"between: expected [low, high], found {len(self.between)} "
                                 f"value(s)")
            if self.between[0] > self.between[1]:
                raise ValueError(f"between: low ({self.between[0]:g}) must be <= high "
                                 f"({self.between[1]:g})")
        return self


class ValueRule(_Rule):
    """The metric of one model (its mean over seeds) lies within the bound."""

    @model_validator(mode="after")
    def _fraction(self) -> ValueRule:
        _check_fraction(self, 0.0, 1.0)
        return self


class RatioRule(_Rule):
    """The metric of ``of`` divided by that of ``to`` lies within the bound."""

    to: str = Field(min_length=1)


class DifferenceRule(_Rule):
    """The metric of ``of`` minus that of ``minus`` (paired on shared seeds) lies within."""

    minus: str = Field(min_length=1)

    @model_validator(mode="after")
    def _fraction(self) -> DifferenceRule:
        _check_fraction(self, -1.0, 1.0)
        return self


class SpeedRule(_Rule):
    """How many times as fast ``of`` is as ``over`` in a speed metric (training images/s, or
    latency: lower is faster), judged seed by seed."""

    over: str = Field(min_length=1)

    @field_validator("metric")
    @classmethod
    def _a_speed(cls, metric: str) -> str:
        speeds = [m.name for m in METRICS.values() if m.unit in SPEED_UNITS]
        if metric in METRICS and metric not in speeds:
            raise ValueError(f"{metric!r} is not a speed; allowed: {', '.join(speeds)}")
        return metric


def _check_fraction(rule: _Rule, low: float, high: float) -> None:
    """An accuracy bound written as 70 where 70% (0.7) was meant never holds: refused."""
    if METRICS[rule.metric].unit != "fraction":
        return
    for bound in BOUNDS:
        value = getattr(rule, bound)
        for number in value if isinstance(value, list) else [value]:
            if number is not None and not low <= number <= high:
                raise ValueError(f"{bound}: {rule.metric} is a fraction: write 70% or 0.7, "
                                 f"found {number:g}")


class ClaimEntry(BaseModel):
    """One claim of the document, with the rule that checks it (one of value, ratio,
    difference or speed)."""

    model_config = _STRICT
    claim: str = Field(min_length=1, description="What the document says, in its words.")
    source: str = Field("", description="Where in the document it says so.")
    note: str = Field("", description="Shown with the rule (why the bound is what it is).")
    value: ValueRule | None = None
    ratio: RatioRule | None = None
    difference: DifferenceRule | None = None
    speed: SpeedRule | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> ClaimEntry:
        given = [k for k in CLAIM_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give one rule ({_alternatives(CLAIM_KINDS)}), found "
                             f"{' and '.join(given) or 'none'}")
        kind = given[0]
        rule = getattr(self, kind)
        second = SECOND_MODEL_KEY[kind]
        if second is not None and getattr(rule, second) == rule.of:
            raise ValueError(f"{kind}: of and {second} name the same model, {rule.of!r}; a "
                             f"{kind} compares two models")
        return self


class RecipeSection(BaseModel):
    """The training the document's numbers are for: accuracy claims of a study that trained
    other epochs or fewer images are not measured."""

    model_config = _STRICT
    epochs: int | None = Field(None, ge=1, le=1_000_000)
    train_images: int | None = Field(None, ge=1, le=MAX_INTEGER)


class ClaimsSection(BaseModel):
    """Claims of a document about the study's models, checked by the study's report."""

    model_config = _STRICT
    document: str = Field("", description="Where the claims come from (shown in the report).")
    recipe: RecipeSection = Field(default_factory=RecipeSection)
    items: list[ClaimEntry] = Field(min_length=1, max_length=MAX_CLAIMS)


class DeploySection(BaseModel):
    """Where trained models ship: after training, each trial's model is lowered to these
    runtimes in these precisions, checked, timed (interleaved, with eager PyTorch) and, in
    int8, its validation accuracy measured (see dwsearch.deploy.deploy_trained). Default:
    no runtime, nothing measured."""

    model_config = _STRICT
    runtimes: list[Literal["executorch", "onnxruntime"]] = Field(
        default_factory=list, description="executorch (XNNPACK delegate) and/or onnxruntime "
                                          "(CPU execution provider).")
    precisions: list[Literal["fp32", "int8"]] = Field(
        ["fp32"], min_length=1,
        description="fp32 and/or int8 (post-training static quantization, calibrated on "
                    "training images).")
    threads: int = Field(1, ge=1, le=1024, description="Intra-op threads for every runtime.")
    batch_size: int = Field(1, ge=1, le=4096, description="Images per timed call.")
    calibration_images: int = Field(256, ge=1, le=50_000,
                                    description="int8: training images the quantizer sees.")
    check_images: int = Field(256, ge=1, le=50_000,
                              description="Validation images each program is checked on.")
    warmup: int = Field(5, ge=0, le=10_000, description="Untimed calls per program.")
    blocks: int = Field(10, ge=1, le=10_000, description="Interleaved timing blocks.")
    calls_per_block: int = Field(5, ge=1, le=10_000, description="Timed calls per block.")

    @field_validator("runtimes", "precisions")
    @classmethod
    def _once(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"each at most once, found {values}")
        return values


class PruneSection(BaseModel):
    """Structured pruning (dwsearch.compress.prune, Torch-Pruning): a trained model's
    channels pruned to a target, then fine-tuned; the trial's metrics are the pruned
    model's, and its record keeps where it came from."""

    model_config = _STRICT
    from_: Literal["trial", "base"] = Field(
        "trial", alias="from",
        description="trial: each trial's configuration, trained with the recipe, is pruned; "
                    "base: the study's base, trained once per seed with the recipe (kept "
                    "beside the study's weights), is pruned in every trial.")
    target: dict[str, int | float | str] | str = Field(
        description="{macs: 0.5} (a ratio of the model's own), {params: 120K} (a count), or "
                    "{macs: MODEL}: a spec's count (a built-in name or a spec file).")
    importance: Literal["magnitude", "taylor"] = "magnitude"
    finetune_epochs: int = Field(1, ge=1, le=1000, description="Epochs of the recipe after "
                                                                "pruning: a pruned trial is "
                                                                "measured fine-tuned.")
    taylor_batches: int = Field(4, ge=1, le=100_000)
    taylor_batch_size: int = Field(64, ge=1, le=100_000)
    when: dict[str, Value | list[Value]] = Field(
        default_factory=dict,
        description="Prune only configurations whose parameters have these values, e.g. "
                    "{model: seed_cnn}; default: every one.")


class QatSection(BaseModel):
    """Quantization-aware training (dwsearch.compress.qat): each trained model is quantized
    post-training to int8 (ExecuTorch, XNNPACK) and its program's validation accuracy
    measured; where it loses more than max_drop, QAT with the same quantizer fine-tunes it."""

    model_config = _STRICT
    max_drop: float = Field(0.01, ge=0, le=1, description="Accuracy loss of post-training "
                                                          "int8 that triggers QAT (0.01: one "
                                                          "point).")
    epochs: int = Field(1, ge=1, le=1000, description="Epochs of QAT.")
    lr: float | None = Field(None, gt=0, le=10, description="QAT's learning rate; default: "
                                                             "a tenth of the recipe's.")
    calibration_images: int = Field(128, ge=1, le=100_000)
    force: bool = Field(False, description="Run QAT whatever post-training int8 loses.")


class StudyModel(BaseModel):
    """A dwsearch study: what to train, what to vary, what to optimize, and how long."""

    model_config = _STRICT
    format: int = Field(STUDY_FORMAT, ge=1, description="Study file format version.")
    name: str = Field(description="Study name: letters, digits, '_', '.', '-'.")
    description: str = ""
    base: str | dict[str, Any] = Field(
        description="The base model: a built-in spec name, a spec file (relative to this "
                    "file) or an inline spec {input, num_classes, layers}.")
    data: DataSection = Field(default_factory=DataSection)  # type: ignore[valid-type]
    train: TrainSection = Field(default_factory=TrainSection)  # type: ignore[valid-type]
    space: dict[str, Dimension] = Field(
        default_factory=dict,
        description="Key path -> values: layers[i].ARG, layers[i:j].ARG, layers[i,j].ARG, "
                    "width, model, train.FIELD.")
    objectives: list[str] = Field(
        default_factory=lambda: ["val_accuracy:max"], min_length=1,
        description="metric[:max|min] for metric in " + ", ".join(METRIC_DIRECTIONS) + ".")
    constraints: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="Checked before training, e.g. {macs: '<= 400M', params: 2e6}.")
    sampler: Literal["tpe", "nsga2", "random", "grid", "ablation"] | SamplerSection = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband",
                    "cost_median"] | PrunerSection = "none"
    n_trials: int | None = Field(None, ge=1, le=MAX_TRIALS,
                                 description="Training runs in all (configurations x repeats),"
                                             " at most 1,000,000; default for grid and "
                                             "ablation: every one.")
    timeout: int | float | str | None = Field(
        None, description="Stop starting trials after this long: seconds, or '30m', '2h'.")
    repeats: Annotated[int, Field(ge=1, le=1000)] = 1
    seed: Annotated[int, Field(ge=0, le=MAX_INTEGER)] = 0
    seeds: Literal["shared", "per_trial"] = Field(
        "shared", description="shared: repeat r of every configuration trains with the same "
                              "seed (paired comparisons, reuse of equal runs); per_trial: seeds "
                              "also depend on the trial number.")
    test: bool = Field(True, description="Evaluate each trained model on the test set, for "
                                         "the report (the search never uses it).")
    latency: bool = Field(True, description="Measure batch-1 forward latency of each model on "
                                            "the worker's device.")
    keep_weights: bool | Literal["front"] = Field(
        "front", description="Keep trained weights (for dwsearch export): true keeps every "
                             "trial's, false none, front (default) those of configurations "
                             "that can still be on the front (the others are removed once "
                             "they are dominated for good).")
    storage: str | None = Field(None, description="Optuna storage URL; default: a SQLite file "
                                                  "per study (see README).")
    deploy: DeploySection = Field(default_factory=DeploySection,
                                  description="Runtimes and precisions to measure each "
                                              "trained model in (default: none).")
    prune: PruneSection | None = Field(None, description="Prune trained models (default: "
                                                          "none).")
    qat: QatSection | None = Field(None, description="Quantization-aware training where "
                                                     "post-training int8 loses too much "
                                                     "(default: none).")
    claims: ClaimsSection | None = Field(
        None, description="Claims of a document about the study's models, each with a rule; "
                          "the report checks them (see README). Not part of what the study "
                          "measures: changing them never stops a study from resuming.")


def config_defaults() -> dict[str, Any]:
    """Every key of a study's stored config that has a default, with it (JSON form)."""
    out: dict[str, Any] = {}
    for name, field in StudyModel.model_fields.items():
        if not field.is_required():
            value = field.get_default(call_default_factory=True)
            out[name] = (value.model_dump(mode="json", by_alias=True)
                         if isinstance(value, BaseModel) else value)
    return out


@dataclasses.dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" or "minimize"

    def __str__(self) -> str:
        return f"{self.metric}:{'max' if self.direction == 'maximize' else 'min'}"


@dataclasses.dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # "<=", "<", ">=", ">"
    value: float

    def holds(self, measured: float) -> bool:
        return {"<=": measured <= self.value, "<": measured < self.value,
                ">=": measured >= self.value, ">": measured > self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_human(self.value)}"


@dataclasses.dataclass(frozen=True)
class Bound:
    """Where a claim's number must lie: ``between`` low and high (both included), or
    ``at_least``, ``at_most``, ``above`` or ``below`` ``low``."""

    kind: str  # one of BOUNDS
    low: float
    high: float | None = None  # between only

    def holds(self, value: float) -> bool:
        if self.kind == "between":
            assert self.high is not None
            return self.low <= value <= self.high
        return {"at_least": value >= self.low, "at_most": value <= self.low,
                "above": value > self.low, "below": value < self.low}[self.kind]


@dataclasses.dataclass(frozen=True)
class ClaimRule:
    """How a claim is checked: the ``metric`` of model ``of`` (kind ``value``), or of ``of``
    against ``other`` (``ratio``: of / other, ``difference``: of - other, ``speed``: how many
    times as fast of is as other, seed by seed), within ``bound``."""

    kind: str  # one of CLAIM_KINDS
    metric: str  # a name of dwsearch.metrics.METRICS
    of: str  # a model of the study, by its spec name
    other: str | None  # the second model (ratio: to, difference: minus, speed: over)
    bound: Bound

    @property
    def models(self) -> tuple[str, ...]:
        return (self.of,) if self.other is None else (self.of, self.other)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a document, in its words, with where it says so and its rule."""

    text: str
    source: str
    note: str
    rule: ClaimRule
    where: str  # key path in the study file, for messages: claims.items[3]


@dataclasses.dataclass(frozen=True)
class Claims:
    """The ``claims:`` section of a study: what a document says about the study's models."""

    document: str
    epochs: int | None  # the document's recipe: accuracy claims need a study trained as long
    train_images: int | None  # ... and on at least as many images
    items: tuple[Claim, ...]

    @property
    def models(self) -> tuple[str, ...]:
        """The models the claims name, in order of first mention."""
        return tuple(dict.fromkeys(m for c in self.items for m in c.rule.models))


def _claims(section: ClaimsSection | None) -> Claims | None:
    if section is None:
        return None
    items = []
    for i, entry in enumerate(section.items):
        kind = next(k for k in CLAIM_KINDS if getattr(entry, k) is not None)
        rule: _Rule = getattr(entry, kind)
        bound_kind = next(b for b in BOUNDS if getattr(rule, b) is not None)
        number = getattr(rule, bound_kind)
        bound = (Bound(bound_kind, number[0], number[1]) if bound_kind == "between"
                 else Bound(bound_kind, number))
        second = SECOND_MODEL_KEY[kind]
        items.append(Claim(entry.claim, entry.source, entry.note,
                           ClaimRule(kind, rule.metric, rule.of,
                                     getattr(rule, second) if second else None, bound),
                           f"claims.items[{i}]"))
    return Claims(section.document, section.recipe.epochs, section.recipe.train_images,
                  tuple(items))


@checked(StudyError)
def parse_claims(data: Any, source: str = "<dict>") -> Claims | None:
    """A ``claims:`` section (as a study file or a stored study holds it) as :class:`Claims`
    (None for null); a mistake is one located :class:`StudyError` line."""
    if data is None:
        return None
    huge = _huge_integer({"claims": data}, source)
    if huge is not None:
        raise huge
    try:
        section = TypeAdapter(ClaimsSection).validate_python(data)
    except ValidationError as err:
        raise _first_error(err, source, prefix=("claims",)) from err
    return _claims(section)


def _human(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A validated study: the raw model plus the parsed parts everything else uses."""

    model: StudyModel
    source: str  # the file it came from, for messages ("<dict>" for Python callers)
    directory: Path  # relative paths in the file resolve against this
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    sampler: SamplerSection
    pruner: PrunerSection
    timeout_seconds: float | None
    # Key paths changed by --set (run-study --set KEY=VALUE): errors about them name --set.
    overrides: tuple[str, ...] = ()
    claims: Claims | None = None  # what the study's report checks (not what it measures)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def distill(self) -> DistillSection | None:
        """The train.distill section (the teacher), or None."""
        section: DistillSection | None = getattr(self.model.train, "distill", None)
        return section

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def data_config(self, **changes: Any) -> DataConfig:
        data = typing.cast(BaseModel, self.model.data)
        values = {**data.model_dump(), "seed": self.model.seed, **changes}
        return DataConfig(**values)

    def train_config(self, **changes: Any) -> TrainConfig:
        train = typing.cast(BaseModel, self.model.train)
        values = {k: v for k, v in train.model_dump().items() if k not in STUDY_TRAIN_FIELDS}
        return TrainConfig(**{**values, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The study as plain data, every default filled in (stored with the study)."""
        return self.model.model_dump(mode="json", by_alias=True)

    def error(self, path: str, message: str) -> StudyError:
        """A located error about this study: ``file: key.path: message``."""
        return StudyError(relocate(f"{self.source}: {path}: {message}", self.source,
                                   self.overrides))


def relocate(message: str, source: str, overrides: tuple[str, ...]) -> str:
    """``message`` (``source: key.path: what``) told from the ``--set`` that wrote the value
    when the key path is one a ``--set`` changed (or lies under one): the file did not say
    it, the command line did."""
    for key in sorted(overrides, key=len, reverse=True):
        prefix = f"{source}: {key}"
        if not message.startswith(prefix):
            continue
        rest = message[len(prefix):]
        if rest.startswith(": "):
            return f"--set {key}{rest}"
        if rest[:1] in (".", "["):
            return f"--set {key}: {key}{rest}"
    return message


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(message: str) -> str:
    """``message`` on one line: control characters (a key written as "a\\nb" in YAML)
    shown as escapes."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], message)


def relocating(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: a :class:`StudyError` from ``func`` about a key a ``--set`` changed names
    that ``--set`` (the study is the first :class:`StudyConfig` argument), and its message
    stays one line whatever the keys hold."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except StudyError as err:
            config = next((a for a in (*args, *kwargs.values())
                           if isinstance(a, StudyConfig)), None)
            moved = str(err) if config is None else relocate(str(err), config.source,
                                                                config.overrides)
            moved = printable(moved)
            if moved == str(err):
                raise
            raise type(err)(moved) from err

    return wrapper


# -- parsing --------------------------------------------------------------------------------


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` (for did-you-mean on an unknown key)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list: its model is already current
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        candidates = [a for a in typing.get_args(annotation) or (annotation,)
                      if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        current = candidates[0]
    return [f.alias or name for name, f in getattr(current, "model_fields", {}).items()]


def _dimension_error(key: str, value: Any, source: str) -> StudyError | None:
    """The error of one space entry, validated against the form its keys ask for (a union
    error would report every form)."""
    model: Any
    keys: list[str] = []
    if isinstance(value, list):
        model = TypeAdapter(Annotated[list[Value], Field(min_length=1)])
    elif isinstance(value, Mapping) and ("low" in value or "high" in value):
        model, keys = TypeAdapter(Range), list(Range.model_fields)
    elif isinstance(value, Mapping):
        model, keys = TypeAdapter(Choices), list(Choices.model_fields)
    else:
        return StudyError(f"{source}: space.{key}: expected a list of values, {{choices: [...]}}"
                          f" or {{low: ..., high: ...}}, found {value!r}")
    try:
        model.validate_python(value)
    except ValidationError as err:
        return _first_error(err, source, prefix=("space", key), allowed=keys)
    return None


_BRANCHES = ("bool", "int", "float", "str", "list[union[bool,int,float,str]]", "Choices",
             "Range", "SamplerSection", "PrunerSection", "dict[str,any]")


def _first_error(
    err: ValidationError, source: str, prefix: tuple[Any, ...] = (),
    allowed: list[str] | None = None, raw: Mapping[str, Any] | None = None,
) -> StudyError:
    """The most useful pydantic error as one located line."""
    errors = err.errors()
    if raw is not None:
        for e in errors:
            if e["loc"][:1] == ("space",) and len(e["loc"]) > 1:
                key = str(e["loc"][1])
                space = raw.get("space")
                if isinstance(space, Mapping) and key in space:
                    located = _dimension_error(key, space[key], source)
                    if located is not None:
                        return located
    # Unions report one error per branch; prefer the branch that got furthest into the value.
    best = max(errors, key=lambda e: (len(e["loc"]), e["type"] != "model_type"))
    loc = prefix + tuple(p for p in best["loc"] if not (isinstance(p, str) and (
        p in _BRANCHES or p.startswith(("literal[", "function-", "constrained-")))))
    path = _path(loc)
    found = best.get("input")
    message = best["msg"]
    if any(p in ("bool", "int", "float", "str") for p in best["loc"]):
        branches = {p for e in errors if e["loc"][:-1] == best["loc"][:-1]
                    for p in e["loc"][-1:]}
        message = ("expected a number" if branches <= {"int", "float"}
                   else "expected a boolean, number or string")
    if best["type"] == "extra_forbidden":
        allowed = allowed if allowed is not None else _allowed_keys(StudyModel, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return StudyError(f"{source}: {path}: unknown key; {hint}allowed: {', '.join(allowed)}")
    if best["type"] == "missing":
        return StudyError(f"{source}: {path}: missing (required)")
    if best["type"] == "value_error":  # our own validators: the message names the values
        return StudyError(f"{source}: {path}: {message.removeprefix('Value error, ')}")
    if best["type"] == "model_type":  # pydantic names its class: "instance of RatioRule"
        message = "expected a mapping (key: value, ...)"
    shown = describe_found(found)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return StudyError(f"{source}: {path}: {message}, found {shown}")


def _parse_objective(text: str, where: str) -> Objective:
    metric, _, direction = text.partition(":")
    metric = metric.strip()
    directions = {m.name: m.direction for m in METRICS.values() if m.objective}
    if metric not in directions:
        hint = difflib.get_close_matches(metric, list(directions), n=1)
        extra = f"did you mean {hint[0]!r}? " if hint else ""
        if metric == "test_accuracy":
            raise StudyError(f"{where}: test_accuracy cannot be an objective: the search "
                             f"selects on the validation split, and the report shows test "
                             f"accuracy; use val_accuracy")
        raise StudyError(f"{where}: unknown metric {metric!r}; {extra}allowed: "
                         f"{', '.join(directions)}")
    words = {"max": "maximize", "maximize": "maximize", "min": "minimize",
             "minimize": "minimize", "": directions[metric]}
    if direction.strip() not in words:
        raise StudyError(f"{where}: direction {direction!r}: allowed max or min")
    return Objective(metric, words[direction.strip()])


def _check_section(metric: str, model: StudyModel, where: str) -> None:
    """A metric another section measures (qat:) needs that section."""
    section = METRICS[metric].section
    if section is not None and getattr(model, section) is None:
        raise StudyError(f"{where}: {metric} is measured by the {section}: section, and the "
                         f"study has none; add e.g. {section}: {{max_drop: 0.01}}")


def _check_deployed(metric: str, deploy: DeploySection, where: str) -> None:
    """A metric measured where models ship needs the deploy: section to measure it."""
    needs = METRICS[metric].deploy
    if needs is None:
        return
    runtime, precision = needs
    runtimes = deploy.runtimes if runtime == "*" else [r for r in deploy.runtimes
                                                       if r == runtime]
    if runtimes and precision in deploy.precisions:
        return
    example = "executorch" if runtime == "*" else runtime
    precisions = ", ".join(dict.fromkeys(["fp32", precision]))
    raise StudyError(f"{where}: {metric} is measured where models ship, and deploy: measures "
                     f"runtimes {deploy.runtimes or 'none'} in {', '.join(deploy.precisions)}; "
                     f"add e.g. deploy: {{runtimes: [{example}], precisions: [{precisions}]}}")


_CONSTRAINT = re.compile(r"^\s*(<=|<|>=|>)?\s*([0-9.eE+-]+)\s*([kKMGT]?)\s*$")


def _parse_constraint(metric: str, value: str | int | float, where: str) -> Constraint:
    allowed = [m.name for m in METRICS.values() if m.constrainable]
    if metric not in allowed:
        raise StudyError(f"{where}: unknown metric {metric!r}; constraints apply to costs "
                         f"known before training: {', '.join(allowed)}")
    if isinstance(value, bool):
        raise StudyError(f"{where}: expected a bound like '<= 400M' or a number, found {value!r}")
    if isinstance(value, (int, float)):
        op = "<="
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    else:
        match = _CONSTRAINT.match(value)
        try:
            number = float(match[2]) * _SUFFIX[match[3]] if match else math.nan
        except ValueError:
            number = math.nan
        if match is None or math.isnan(number):
            raise StudyError(f"{where}: expected a bound like '<= 400M', '< 2e6' or '>= 1K', "
                             f"found {value!r}")
        op = match[1] or "<="
    if not math.isfinite(number):
        raise StudyError(f"{where}: the bound must be a finite number (at most about 1.8e308),"
                         f" found {describe_found(value)}")
    return Constraint(metric, op, number)


_DURATION = re.compile(r"^\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(s|m|min|h|d)?\s*$")


def parse_timeout(value: int | float | str | None, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise StudyError(f"{where}: expected seconds or a duration like '30m', found {value!r}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond any float: not a duration either
            seconds = math.inf
    else:
        match = _DURATION.match(value)
        scale = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
        try:
            seconds = float(match[1]) * scale[match[2]] if match else math.nan
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds):
            raise StudyError(f"{where}: expected seconds or a duration like '30m', '2h', "
                             f"found {value!r}")
    if not 0 < seconds < 10 * 365 * 86400:
        shown = repr(value) if isinstance(value, str) else describe_found(value)
        raise StudyError(f"{where}: expected a positive duration of at most 10 years, found "
                         f"{shown}")
    return seconds


def _huge_integer(data: Mapping[str, Any], source: str) -> StudyError | None:
    """The first integer anywhere in ``data`` beyond :data:`MAX_INTEGER`, as a located error
    (YAML reads any number of digits; float(), Optuna's storages and torch do not). The walk
    is iterative and bounded, so nesting and shared objects (Python callers) cost nothing."""
    stack: list[tuple[Any, str]] = [(data, "")]
    seen: set[int] = set()
    budget = 200_000
    while stack and budget > 0:
        value, path = stack.pop()
        budget -= 1
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if abs(value) > MAX_INTEGER:
                hint = ("; write a bound this large as text, e.g. '<= 1e30'"
                        if path.startswith("constraints") else "")
                shown = describe_found(value).removesuffix(" (out of range)")
                return StudyError(f"{source}: {path or '(top level)'}: {shown} is out of "
                                  f"range: integers in a study file are within +-(2^63-1)"
                                  f"{hint}")
            continue
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = (list(value.items()) if isinstance(value, Mapping)
                     else list(enumerate(value)))
            for key, item in reversed(items):
                if isinstance(key, int) and not isinstance(value, Mapping):
                    child = f"{path}[{key}]"
                else:
                    child = f"{path}.{key}" if path else str(key)
                stack.append((item, child))
    return None


def _upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring a file of an older format to :data:`STUDY_FORMAT` (1 is the first: nothing yet);
    refuse a newer one."""
    version = data.get("format", STUDY_FORMAT)
    if isinstance(version, int) and not isinstance(version, bool) and version > STUDY_FORMAT:
        raise StudyError(f"{source}: format: {version} was written for a newer dwsearch; this "
                         f"one reads study formats 1..{STUDY_FORMAT}; upgrade dwsearch")
    return data


@checked(StudyError)
def parse_study_config(
    data: Any, source: str = "<dict>", directory: str | Path = ".", *,
    overrides: Sequence[str] = (),
) -> StudyConfig:
    """Validate plain data (a parsed study file) into a :class:`StudyConfig`. ``overrides``:
    the key paths a ``--set`` changed, so errors about them name the ``--set``."""
    keys = tuple(str(k) for k in overrides)
    try:
        return _parse(data, source, directory, keys)
    except StudyError as err:
        moved = printable(relocate(str(err), source, keys))
        if moved == str(err):
            raise
        raise StudyError(moved) from err


def _parse(data: Any, source: str, directory: str | Path, overrides: tuple[str, ...]
           ) -> StudyConfig:
    if not isinstance(data, Mapping):
        raise StudyError(f"{source}: expected a mapping with keys name, base, space, ...; "
                         f"found {type(data).__name__}")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise StudyError(f"{source}: keys must be strings, found {bad_keys[0]!r}")
    huge = _huge_integer(data, source)
    if huge is not None:
        raise huge
    raw = _upgrade(dict(data), source)
    try:
        model = StudyModel.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err, source, raw=raw) from err
    if not _NAME.match(model.name):
        raise StudyError(f"{source}: name: expected letters, digits, '_', '.', '-' (at most 100, "
                         f"not starting with a symbol), found {model.name!r}")
    for section, cls in (("train", TrainConfig), ("data", DataConfig)):
        try:
            cls(**{k: v for k, v in getattr(model, section).model_dump().items()
                   if k not in STUDY_TRAIN_FIELDS})
        except ConfigError as err:
            raise StudyError(f"{source}: {section}.{err}") from err
    objectives = tuple(
        _parse_objective(text, f"{source}: objectives[{i}]")
        for i, text in enumerate(model.objectives)
    )
    seen = [o.metric for o in objectives]
    if len(set(seen)) != len(seen):
        raise StudyError(f"{source}: objectives: each metric at most once, found {seen}")
    constraints = tuple(
        _parse_constraint(metric, value, f"{source}: constraints.{metric}")
        for metric, value in model.constraints.items()
    )
    for where, metric in ([(f"objectives[{i}]", o.metric) for i, o in enumerate(objectives)]
                          + [(f"constraints.{c.metric}", c.metric) for c in constraints]):
        _check_deployed(metric, model.deploy, f"{source}: {where}")
        _check_section(metric, model, f"{source}: {where}")
    sampler = model.sampler if isinstance(model.sampler, SamplerSection) else SamplerSection(
        name=model.sampler)
    pruner = model.pruner if isinstance(model.pruner, PrunerSection) else PrunerSection(
        name=model.pruner)
    if len(objectives) > 1 and pruner.name in ("median", "successive_halving", "hyperband"):
        raise StudyError(
            f"{source}: pruner.name: {pruner.name!r} prunes on one objective only (Optuna's "
            f"pruners are single-objective) and this study has {len(objectives)}; use "
            f"cost_median (compares validation accuracy with finished trials of similar MACs) "
            f"or none"
        )
    if pruner.name != "none" and not any(
            o.metric in ("val_accuracy", "best_val_accuracy") for o in objectives):
        raise StudyError(f"{source}: pruner.name: pruning compares validation accuracy during "
                         f"training, and no objective is val_accuracy; use pruner none")
    if pruner.name in ("median", "successive_halving", "hyperband") and (
            objectives[0].metric not in ("val_accuracy", "best_val_accuracy")):
        raise StudyError(f"{source}: pruner.name: {pruner.name!r} prunes on the objective, "
                         f"which must be val_accuracy")
    val_size = typing.cast(BaseModel, model.data).model_dump()["val_size"]
    if val_size == 0 and any(o.metric.endswith("val_accuracy") for o in objectives):
        raise StudyError(f"{source}: data.val_size: 0 leaves no validation split, and the "
                         f"objectives need validation accuracy; use a positive size")
    if model.qat is not None and val_size == 0:
        raise StudyError(f"{source}: qat: quantization-aware training compares int8 accuracy "
                         f"on the validation split, and data.val_size is 0; use a positive "
                         f"size")
    if model.prune is not None:
        _check_prune(model, source)
    timeout = parse_timeout(model.timeout, f"{source}: timeout")
    if sampler.name in ("tpe", "nsga2", "random") and model.n_trials is None and timeout is None:
        raise StudyError(f"{source}: n_trials: sampler {sampler.name!r} needs n_trials or a "
                         f"timeout (grid and ablation default to every configuration)")
    if (sampler.name in ("tpe", "nsga2", "random") and model.n_trials is not None
            and model.n_trials % model.repeats):
        raise StudyError(f"{source}: n_trials: {model.n_trials} is not a multiple of repeats "
                         f"({model.repeats}); every sampled configuration trains repeats times")
    if isinstance(model.base, str) and not model.base.strip():
        raise StudyError(f"{source}: base: expected a spec name, file or inline spec, found ''")
    if sampler.name in ("grid", "ablation"):
        for key, dim in model.space.items():
            if isinstance(dim, Range) and dim.log:
                raise StudyError(
                    f"{source}: space.{key}: log: true has no meaning for sampler "
                    f"{sampler.name!r}, which enumerates every value of a range (low to high "
                    f"by step); drop log, or list the values, e.g. [0.01, 0.03, 0.1]")
    return StudyConfig(model, source, Path(directory), objectives, constraints, sampler, pruner,
                       timeout, overrides, _claims(model.claims))


def prune_target(section: PruneSection, where: str) -> tuple[str, float | None, str | None]:
    """The prune: section's target as (metric, value, model): a ratio or count, or the
    name or file of a spec whose count it is (value None)."""
    from dwsearch.compress.config import PruneTarget

    raw: Any = section.target
    if isinstance(raw, str):
        key, sep, text = raw.partition("=")
        raw = {key.strip(): text.strip()} if sep else raw
    try:
        target = PruneTarget.parse(raw)
    except ConfigError as err:
        # Not a ratio or a count: {macs: MODEL}, a spec whose count it is.
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((metric, value),) = raw.items()
            if metric in ("macs", "params") and isinstance(value, str) and value.strip():
                return metric, None, value.strip()
        raise StudyError(f"{where}: {str(err).removeprefix('target: ')}") from err
    return target.metric, target.value, None


def _check_prune(model: StudyModel, source: str) -> None:
    assert model.prune is not None
    prune_target(model.prune, f"{source}: prune.target")
    for key in model.prune.when:
        if key not in model.space:
            raise StudyError(f"{source}: prune.when.{key}: not a key of space; allowed: "
                             f"{', '.join(model.space) or 'none (the space is empty)'}")
    if model.prune.from_ == "base":
        varied = [k for k in model.space if not k.startswith("train.")]
        if varied:
            raise StudyError(f"{source}: space.{varied[0]}: prune.from base prunes the study's "
                             f"base in every trial, so the space may vary only train.* (the "
                             f"fine-tuning); use prune.from trial to prune each configuration")
        if model.prune.when:
            raise StudyError(f"{source}: prune.when: prune.from base prunes every trial; drop "
                             f"when, or use prune.from trial")


@checked(StudyError)
def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file; every problem is one located :class:`StudyError`."""
    path = Path(path)
    if not path.is_file():
        hint = " (a folder)" if path.is_dir() else ""
        raise StudyError(f"{path}: no such study file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise StudyError(f"{path}: cannot read the study file ({err})") from err
    data = load_yaml(text, str(path), StudyError)
    return parse_study_config(data, str(path), path.parent)


def json_schema() -> dict[str, Any]:
    """The study file format as JSON Schema (for editors: yaml-language-server and others)."""
    schema = StudyModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dwsearch study"
    return schema
