"""The run record: what one training run of one spec measured, as flat, versioned plain data.

:func:`dwsearch.run.train_spec` returns it, studies store it on their trials as JSON, and
reports read nothing else, so a report opens without torch or the models. Top-level fields are
scalars apart from the spec, the configs and two lists of rows (epochs and layers), so one
record is one row of a DataFrame (:meth:`RunRecord.flat`).

Compatibility: ``format`` is :data:`RECORD_FORMAT` for records written by this version.
:meth:`RunRecord.from_dict` reads every earlier format (upgrading it) and refuses newer ones
with a message that names the version. This module imports only the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dwsearch.errors import RecordError

__all__ = ["RECORD_FORMAT", "TRIAL_INFO_FORMAT", "TRIAL_STATUSES", "EpochMetrics", "RunRecord",
           "TrialInfo"]

RECORD_FORMAT = 1
# 1: the untyped dict studies wrote before TrialInfo (the same keys); 2: TrialInfo.
TRIAL_INFO_FORMAT = 2


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured. Losses are mean cross-entropy per image (nats)."""

    epoch: int  # 1-based
    train_loss: float  # includes label smoothing: the objective being optimized
    train_accuracy: float  # fraction in [0, 1], measured on the fly in train mode
    val_loss: float | None  # plain cross-entropy (no smoothing); None without validation
    val_accuracy: float | None  # fraction in [0, 1]; None without validation
    lr: float  # learning rate (first param group) of the epoch's last optimizer step
    seconds: float  # wall seconds of the training part (producing batches included)
    images_per_second: float  # training images / seconds
    eval_seconds: float = 0.0  # wall seconds of validation


@dataclass(frozen=True)
class RunRecord:
    """One training run: the architecture, its costs, how it trained, where, and with what.

    Accuracies are fractions in [0, 1]; costs are per sample under the convention of
    :mod:`dwsearch.costs` (``bn`` says how batch norm was counted); times are wall seconds.
    """

    # -- what was trained
    spec: Mapping[str, Any]  # the spec as written (name, input, num_classes, layers)
    spec_hash: str  # canonical hash (defaults filled in): equal architectures, equal hash
    name: str | None  # the spec's name, for people
    # -- costs, counted before training
    params: int
    macs: int  # multiply-adds per sample
    bn: str  # batch norm in the MAC count: "counted" or "folded"
    activations: int  # elements output by conv/linear ops per sample
    saved_bytes: int | None  # bytes autograd saves for backward per sample (None: not measured)
    layers: tuple[Mapping[str, Any], ...]  # per-layer cost rows (dwsearch.costs.Profile.to_rows)
    # -- training
    status: str  # "completed", "diverged" or "stopped"
    message: str  # one line: why the run ended
    epochs: tuple[EpochMetrics, ...]
    val_accuracy: float | None  # at the last epoch
    val_loss: float | None
    best_val_accuracy: float | None
    test_accuracy: float | None  # None unless the test set was evaluated
    test_loss: float | None
    train_seconds: float  # wall seconds of training (this call; resumed epochs excluded)
    load_seconds: float  # wall seconds to load the data (0 when it was already loaded)
    # -- configuration
    seed: int
    train: Mapping[str, Any]  # TrainConfig fields
    data: Mapping[str, Any]  # DataConfig fields
    data_source: str  # where the images came from, in words (says when it is a lossy copy)
    train_images: int
    val_images: int
    test_images: int
    num_classes: int
    # -- environment
    device: str  # "cpu" or "cuda:0"
    device_name: str  # CPU or GPU model
    precision: str  # resolved: "fp32", "bf16" or "fp16"
    threads: int  # torch intra-op threads during training
    host: str
    versions: Mapping[str, str]  # dwsearch, torch, python (cuda)
    created: str  # ISO 8601 UTC time the run finished
    latency: Mapping[str, Any] | None = None  # forward latency and its conditions, if measured
    # The trained model where it ships (dwsearch.deploy.trained.deploy_trained): per runtime
    # and precision its program's latency, size, check and int8 accuracy; None: not measured.
    deploy: Mapping[str, Any] | None = None
    # How the model was compressed (dwsearch.compress), plain data by method: "distill" (the
    # teacher's spec hash and weights checksum, alpha, temperature), "prune" (the source's
    # identity, target, importance, costs before and after), "qat". None: not compressed.
    compression: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # caller's additions (study, trial)
    format: int = RECORD_FORMAT

    # -- derived numbers ---------------------------------------------------------------------
    @property
    def flops(self) -> int:
        """FLOPs per sample: 2 x MACs."""
        return 2 * self.macs

    @property
    def latency_ms(self) -> float | None:
        """Median forward latency in milliseconds, if measured."""
        return None if self.latency is None else float(self.latency["median_ms"])

    @property
    def images_per_second(self) -> float | None:
        """Training throughput of the last epoch."""
        return self.epochs[-1].images_per_second if self.epochs else None

    @property
    def lossy_data(self) -> bool:
        """Whether the images were a lossy re-encoding (the JPEG copy of CIFAR-10)."""
        return "lossy" in self.data_source

    # -- plain data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable plain data; :meth:`from_dict` reads it back unchanged."""
        out = asdict(self)
        out["spec"] = _plain(self.spec)
        out["layers"] = [dict(row) for row in self.layers]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "record") -> RunRecord:
        """Read a record written by this or an earlier dwsearch; newer formats are refused."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected a mapping, found {type(data).__name__}")
        version = data.get("format")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordError(f"{where}: no record format number, found {version!r}")
        if version > RECORD_FORMAT:
            raise RecordError(
                f"{where}: record format {version} was written by a newer dwsearch; this one "
                f"reads formats 1..{RECORD_FORMAT}; upgrade dwsearch"
            )
        data = _upgrade(dict(data))
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names if n not in data and _required(n))
        if missing:
            raise RecordError(f"{where}: record lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        try:
            values["epochs"] = tuple(EpochMetrics(**e) for e in values["epochs"])
        except TypeError as err:
            raise RecordError(f"{where}: epochs: {err}") from err
        values["layers"] = tuple(dict(row) for row in values["layers"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, where: str = "record") -> RunRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordError(f"{where}: not JSON ({err.msg} at char {err.pos})") from err
        return cls.from_dict(data, where)

    def flat(self) -> dict[str, Any]:
        """The scalar fields, one row of a table: no spec, layers or epochs; configs as
        ``train.lr``, ``data.val_size`` ...; derived ``flops``, ``latency_ms``,
        ``images_per_second``, ``lossy_data`` and ``compression`` (the methods, e.g.
        ``"prune+distill"``, or None) included."""
        row: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("spec", "layers", "epochs", "latency", "extra", "deploy", "compression"):
                continue
            if f.name in ("train", "data", "versions"):
                row.update({f"{f.name}.{k}": v for k, v in value.items()})
            else:
                row[f.name] = value
        row["flops"] = self.flops
        row["latency_ms"] = self.latency_ms
        row["images_per_second"] = self.images_per_second
        row["lossy_data"] = self.lossy_data
        row["epochs_trained"] = len(self.epochs)
        # A distilled or pruned run must not pass for a plain one in a table.
        row["compression"] = "+".join(self.compression) if self.compression else None
        return row

    def summary(self) -> str:
        """A few lines for people."""
        lines = [
            f"{self.name or 'model'} ({self.spec_hash}): {self.params:,} params, "
            f"{self.macs / 1e6:.2f} M MACs",
            f"data: {self.data_source}; train {self.train_images:,}, val {self.val_images:,}, "
            f"test {self.test_images:,} images",
            f"status: {self.status}" + (f" ({self.message})" if self.status != "completed" else ""),
        ]
        if self.epochs:
            lines.append(
                f"trained {len(self.epochs)} epoch(s) in {self.train_seconds:.1f} s on "
                f"{self.device} ({self.precision}), {self.epochs[-1].images_per_second:.0f} "
                f"images/s in the last epoch"
            )
        if self.val_accuracy is not None:
            lines.append(f"validation accuracy: {self.val_accuracy:.2%}")
        if self.test_accuracy is not None and self.test_loss is not None:
            lines.append(
                f"test accuracy: {self.test_accuracy:.2%} (test loss {self.test_loss:.4f})"
            )
        return "\n".join(lines)


# How a trial ended (or stands), as the worker writes it and the report reads it:
TRIAL_STATUSES = (
    "waiting",  # a slot laid out, not yet claimed
    "running",
    "completed",  # COMPLETE: trained (or reused: see ``reused_from``)
    "pruned",  # PRUNED: stopped early by the pruner; its partial record is kept
    "diverged",  # FAIL: the loss became NaN or infinite; a result of the configuration
    "infeasible",  # FAIL: over a constraint, found before training
    "error",  # FAIL: could not run (a located reason); machine failures are laid out again
    "killed",  # FAIL: its worker stopped answering; laid out again (``retried_as``)
    "interrupted",  # FAIL: Ctrl-C; laid out again (``retried_as``)
)


@dataclass(frozen=True)
class TrialInfo:
    """dwsearch's identity of one Optuna trial: which slot of the plan it fills, which
    configuration and seed it trains, who ran it and how it ended. The worker writes it (the
    trial's ``dwsearch`` user attribute, :meth:`to_attrs`) and the report reads it
    (:meth:`from_attrs`); nothing else travels between them about a trial.

    ``retried_as`` is not stored: Optuna freezes a finished trial's attributes, so the link
    between a killed or interrupted trial and its retry is written once, on the retry
    (``retry_of``), and :func:`dwsearch.study.results.load_results` fills ``retried_as`` in
    on reading.
    """

    slot: int | None = None  # index in the plan's slots (None: an open-ended study's trial)
    repeat: int = 0  # which repeat of its configuration (0-based)
    role: str = "sample"  # "base", "ablation", "grid" or "sample"
    factor: str | None = None  # an ablation's changed factor (None: the base or not ablation)
    config: Mapping[str, Any] | None = None  # the choices (dimension -> value); None: unsampled
    config_hash: str | None = None  # hash of ``config``: equal choices, equal hash
    seed: int | None = None  # the training seed
    run_key: str | None = None  # architecture, recipe, data and seed: equal keys, equal runs
    worker: str | None = None  # HOST:PID or $DWSEARCH_WORKER_ID of the worker that ran it
    status: str | None = None  # one of TRIAL_STATUSES (None: a slot not claimed yet)
    reused_from: int | None = None  # the trial whose identical run this one copied
    retry_of: int | None = None  # the killed or interrupted trial this one runs again
    retried_as: int | None = None  # derived on reading (see above); never stored
    replaces_a_failed_sample: bool = False  # an empty slot laid out for an infeasible sample
    weights: str | None = None  # the kept weights (keep_weights), absolute path
    trial_seconds: float | None = None  # wall seconds from claim to result
    overhead_seconds: float | None = None  # of those, not training or evaluating
    format: int = TRIAL_INFO_FORMAT

    @property
    def superseded(self) -> bool:
        """Killed or interrupted and laid out again as another trial."""
        return self.retried_as is not None

    def replace(self, **changes: Any) -> TrialInfo:
        from dataclasses import replace

        return replace(self, **changes)

    def to_attrs(self) -> dict[str, Any]:
        """Plain JSON data for the trial attribute (``retried_as`` left out: it is derived)."""
        out = asdict(self)
        del out["retried_as"]
        if self.config is not None:
            out["config"] = _plain(self.config)
        return out

    @classmethod
    def from_attrs(cls, raw: Any, where: str = "trial") -> TrialInfo:
        """Read the attribute written by this or an earlier dwsearch (format 1: the untyped
        dict, the same keys); a newer format or a wrong type is a :class:`RecordError`."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise RecordError(f"{where}: trial info: expected a mapping, found "
                              f"{type(raw).__name__}")
        version = raw.get("format", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecordError(f"{where}: trial info: format {version!r} is not a format number")
        if version > TRIAL_INFO_FORMAT:
            raise RecordError(f"{where}: trial info format {version} was written by a newer "
                              f"dwsearch; this one reads formats 1..{TRIAL_INFO_FORMAT}; "
                              f"upgrade dwsearch")
        names = {f.name for f in fields(cls)} - {"retried_as", "format"}
        values = {k: v for k, v in raw.items() if k in names}
        if values.get("config") is not None and not isinstance(values["config"], Mapping):
            raise RecordError(f"{where}: trial info: config: expected a mapping, found "
                              f"{type(values['config']).__name__}")
        values["replaces_a_failed_sample"] = bool(values.get("replaces_a_failed_sample"))
        return cls(**values)


def _required(name: str) -> bool:
    return name not in ("latency", "extra", "format", "deploy", "compression")


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older record up to :data:`RECORD_FORMAT` (format 1 is the first: nothing yet)."""
    data["format"] = RECORD_FORMAT
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
