"""SYNTHETIC study storages for the report tests: realistic Optuna studies made without
training anything.

Every study made here says so: its stored ``source`` is :data:`SOURCE`, and the report prints
a banner saying the numbers are made up. The trials carry exactly what the study runner stores
(see ``docs/reports.md``, "What the report reads"): the study attribute ``dwsearch`` (format,
config, objectives, base, baselines...), and per trial ``dwsearch`` (slot, repeat, seed,
config, config_hash, role, factor, status, reused_from, retry_of, weights...: a
:class:`~dwsearch.records.TrialInfo`),
``record`` (a :class:`~dwsearch.records.RunRecord`) and ``error``.

What is real and what is made up:

* per-layer costs (params, MACs with batch norm counted, activations, fp32 saved bytes, output
  shapes) come from closed forms of the blocks used here (conv, dwsep, maxpool, dropout,
  dropout2d, flatten, linear); ``tests/test_report_synthetic.py`` checks them against
  :func:`dwsearch.costs.profile`;
* accuracies, learning curves, training speed and latency come from a small made-up model
  (accuracy falls with depthwise layers and width, speed follows MACs) plus seeded noise;
* ``spec_hash`` is the hash of the spec as written (:meth:`ModelSpec.written_hash`, no torch),
  not the canonical hash a real run stores.

This module imports no torch. ``python tests/synthetic_study.py --trials 10000 --storage URL``
writes the large study to any storage (e.g. SQLite) for timing ``dwsearch report`` by hand.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from dwsearch.records import EpochMetrics, RunRecord, TrialInfo
from dwsearch.spec import ModelSpec
from dwsearch.study.config import parse_study_config
from dwsearch.zoo import get_spec

REPO = Path(__file__).resolve().parents[1]

SOURCE = "synthetic (tests/synthetic_study.py)"
DEVICE_NAME = "Synthetic CPU (made up by tests/synthetic_study.py)"
DATA_SOURCE = ("CIFAR-10 image folders at /synthetic/cifar10-jpeg (JPEG); a lossy re-encoding, "
               "pixels differ slightly from the official batches")
VERSIONS = {"dwsearch": "0.1.0", "torch": "2.14.1", "python": "3.11.2"}
TRAIN_IMAGES, VAL_IMAGES, TEST_IMAGES = 45_000, 5_000, 10_000


# -- closed-form costs of the blocks used here ------------------------------------------------


def layer_rows(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-layer cost rows of ``spec`` as :meth:`dwsearch.costs.Profile.to_rows` makes them
    (batch norm counted, fp32 saved bytes), from closed forms."""
    shape: tuple[int, ...] = tuple(spec["input"])
    saved_output = False  # whether the previous layer's output is already saved for backward
    rows = []
    for index, layer in enumerate(spec["layers"]):
        args = {k: v for k, v in layer.items() if k != "block"}
        block = layer["block"]
        params = macs = activations = saved = 0
        if block in ("conv", "dwsep"):
            c, h, w = shape
            k = args.get("kernel_size", 3)
            stride = args.get("stride", 1)
            out = args["out_channels"]
            bn = args.get("bn", True)
            ho, wo = math.ceil(h / stride), math.ceil(w / stride)
            hw = ho * wo
            saved = 0 if saved_output else 4 * c * h * w
            if block == "conv":
                bias = args.get("bias")
                bias = (not bn) if bias is None else bias
                params = c * out * k * k + (out if bias else 0) + (2 * out if bn else 0)
                macs = hw * out * c * k * k + (hw * out if bn else 0)
                activations = out * hw
                saved += (8 if bn else 4) * out * hw
            else:
                params = c * k * k + c * out + (2 * c + 2 * out if bn else 0)
                macs = hw * c * k * k + hw * c * out + (hw * (c + out) if bn else 0)
                activations = (c + out) * hw
                saved += (8 if bn else 4) * (c + out) * hw
            shape = (out, ho, wo)
            saved_output = True
        elif block == "maxpool":
            c, h, w = shape
            k = args.get("kernel_size", 2)
            shape = (c, h // k, w // k)
            saved = (0 if saved_output else 4 * c * h * w) + 8 * math.prod(shape)
            saved_output = False
        elif block == "dropout2d":
            saved = 4 * shape[0]
            saved_output = False
        elif block == "dropout":
            saved = 4 * math.prod(shape)
            saved_output = False
        elif block == "flatten":
            shape = (math.prod(shape),)
        elif block == "linear":
            (features,) = shape
            out = args["out_features"]
            params = features * out + (out if args.get("bias", True) else 0)
            macs = activations = features * out
            activations = out
            saved = 0 if saved_output else 4 * features
            relu = args.get("activation") == "relu"
            saved += 4 * out if relu else 0
            saved_output = relu
            shape = (out,)
        else:
            raise ValueError(f"synthetic costs: block {block!r} is not modelled")
        rows.append({
            "layer": index, "block": block, "args": " ".join(f"{k}={v}" for k, v in args.items()),
            "output": "x".join(map(str, shape)), "params": params, "macs": macs,
            "activations": activations, "saved_bytes": saved,
        })
    return rows


# -- specs from configurations ----------------------------------------------------------------


def seed_spec(name: str) -> dict[str, Any]:
    return get_spec(name).to_dict()


def apply_config(base: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The spec a configuration makes of ``base``: ``model`` picks a built-in spec, ``width``
    scales every conv's channels (the linear layer after them follows), other keys are spec
    overrides (``layers[0:3].block``...). A block change drops arguments the new block lacks."""
    # Cached and shared between equal configurations: callers never change a spec.
    return _apply(json.dumps(dict(base), sort_keys=True), json.dumps(dict(config), sort_keys=True))


@functools.lru_cache(maxsize=4096)
def _apply(base_text: str, config_text: str) -> dict[str, Any]:
    base, config = json.loads(base_text), json.loads(config_text)
    spec = seed_spec(config["model"]) if "model" in config else base
    overrides = {k: v for k, v in config.items() if k not in ("model", "width")}
    spec = ModelSpec.from_dict(spec).with_overrides(overrides).to_dict()
    for layer in spec["layers"]:
        if layer["block"] == "dwsep":
            layer.pop("bias", None)
    if "width" in config:
        for layer in spec["layers"]:
            if "out_channels" in layer:
                layer["out_channels"] = max(8, round(layer["out_channels"] * config["width"]))
    return spec


# -- a made-up but plausible model of what training would measure -----------------------------


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _final_accuracy(spec: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> float:
    """About 71% for seed_cnn, 69.5% for seed_dwsep; wider and larger-kernel nets a little
    better, depthwise layers a little worse."""
    acc = 0.71
    for layer in spec["layers"]:
        if layer["block"] == "dwsep":
            acc -= 0.004
        if layer.get("kernel_size", 3) > 3:
            acc += 0.0015 * (layer["kernel_size"] - 3) / 2
        if layer["block"] == "linear" and layer.get("activation") == "relu":
            acc += 0.004 * math.log2(layer["out_features"] / 1024)
    convs = [layer["out_channels"] for layer in spec["layers"] if "out_channels" in layer]
    width = sum(convs) / 864  # 864: seed_cnn's conv channels
    acc += 0.06 * math.log2(min(width, 1.0))
    return acc


@functools.lru_cache(maxsize=4096)
def _written_hash(text: str) -> str:
    return ModelSpec.from_dict(json.loads(text)).written_hash()


def written_hash(spec: Mapping[str, Any]) -> str:
    """:meth:`ModelSpec.written_hash` of a spec dict (cached: the large study repeats specs)."""
    return _written_hash(json.dumps(dict(spec), sort_keys=True))


def make_record(
    spec: Mapping[str, Any], *, seed: int, epochs: int = 10, stop_after: int | None = None,
    diverge_at: int | None = None, latency: bool = True, device_name: str = DEVICE_NAME,
    name: str | None = None,
) -> RunRecord:
    """A run record for ``spec`` trained with ``seed``: exact costs, made-up metrics."""
    rows = layer_rows(spec)
    macs = sum(r["macs"] for r in rows)
    saved = sum(r["saved_bytes"] for r in rows)
    rng = _rng(spec, seed)
    final = _final_accuracy(spec, rows) + rng.gauss(0, 0.006)
    seconds_per_image = 3.2e-3 + 1.1e-11 * macs + 4e-10 * saved
    run = epochs if stop_after is None else stop_after
    history = []
    status, message = "completed", f"completed {epochs} epochs"
    for e in range(1, run + 1):
        shape = 1 - math.exp(-e / 2.5)
        val = 0.25 + (final - 0.25) * shape / (1 - math.exp(-epochs / 2.5)) + rng.gauss(0, 0.004)
        ips = 1 / (seconds_per_image * rng.uniform(0.97, 1.03))
        if diverge_at is not None and e == diverge_at:
            history.append(EpochMetrics(e, math.nan, 0.1, None, None, 0.1, 10.0, ips))
            status = "diverged"
            message = f"non-finite loss at epoch {e}, step 17, lr 0.1"
            break
        history.append(EpochMetrics(
            epoch=e, train_loss=2.3 * math.exp(-e / 3) + 0.4, train_accuracy=min(0.99, val + 0.03),
            val_loss=1.6 - val, val_accuracy=val, lr=0.1, seconds=TRAIN_IMAGES / ips,
            images_per_second=ips, eval_seconds=1.5,
        ))
    if stop_after is not None:
        status, message = "stopped", f"pruned after epoch {stop_after}"
    finished = status == "completed"
    last = history[-1] if history else None
    vals = [m.val_accuracy for m in history if m.val_accuracy is not None]
    return RunRecord(
        spec=dict(spec), spec_hash=written_hash(spec),
        name=name if name is not None else spec.get("name"),
        params=sum(r["params"] for r in rows), macs=macs, bn="counted",
        activations=sum(r["activations"] for r in rows), saved_bytes=saved, layers=tuple(rows),
        status=status, message=message, epochs=tuple(history),
        val_accuracy=last.val_accuracy if last else None,
        val_loss=last.val_loss if last else None,
        best_val_accuracy=max(vals) if vals else None,
        test_accuracy=(final - 0.003 + rng.gauss(0, 0.003)) if finished else None,
        test_loss=(1.62 - final) if finished else None,
        train_seconds=sum(m.seconds for m in history), load_seconds=0.4, seed=seed,
        train={"optimizer": "sgd", "lr": 0.1, "epochs": epochs, "batch_size": 128,
               "precision": "auto", "seed": seed},
        data={"dataset": "cifar10", "val_size": VAL_IMAGES, "seed": 0},
        data_source=DATA_SOURCE, train_images=TRAIN_IMAGES, val_images=VAL_IMAGES,
        test_images=TEST_IMAGES, num_classes=10, device="cpu", device_name=device_name,
        precision="bf16", threads=2, host="synthetic-host", versions=dict(VERSIONS),
        created="2026-11-25T12:00:00+00:00",
        latency={"median_ms": 0.5 + macs / 1.4e8 * rng.uniform(0.95, 1.05), "batch_size": 1,
                 "device": "cpu", "device_name": device_name, "threads": 2,
                 "channels_last": True, "torch_version": VERSIONS["torch"]} if latency else None,
    )


# -- storages ---------------------------------------------------------------------------------


@dataclass
class Trial:
    """One trial to store: its configuration and what happened to it."""

    config: dict[str, Any]
    spec: dict[str, Any]
    repeat: int
    seed: int
    role: str
    factor: str | None = None
    status: str = "completed"  # completed, pruned, diverged, error, infeasible, killed...
    stop_after: int | None = None  # pruned after this epoch
    error: str | None = None
    reused_from: int | None = None
    retry_of: int | None = None  # the interrupted or killed trial this one runs again
    weights: str | None = None
    name: str | None = None
    record: RunRecord | None = None  # a real run's record, stored instead of a made-up one
    record_changes: dict[str, Any] = field(default_factory=dict)  # fields of the made-up record


def config_hash(config: Mapping[str, Any]) -> str:
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _metric(record: RunRecord, metric: str) -> float:
    if metric == "latency":
        assert record.latency is not None
        return float(record.latency["median_ms"])
    value = getattr(record, metric)
    return float(value)


def record_dict(record: RunRecord) -> dict[str, Any]:
    """``record.to_dict()``, built without ``dataclasses.asdict``'s deep copies (ten times
    faster for the large study; a test checks the two are equal)."""
    out = {f.name: getattr(record, f.name) for f in fields(record)}
    out["spec"] = json.loads(json.dumps(record.spec))
    out["layers"] = [dict(row) for row in record.layers]
    out["epochs"] = [dict(e.__dict__) for e in record.epochs]
    for key in ("train", "data", "versions", "extra"):
        out[key] = dict(out[key])
    out["latency"] = dict(record.latency) if record.latency is not None else None
    return out


@contextlib.contextmanager
def _no_fsync(storage: str) -> Iterator[None]:
    """Optuna's journal file storage fsyncs every write; synthetic data needs no durability,
    so while a journal study is written, fsync is skipped (3 ms a trial)."""
    if not storage.startswith("journal:"):
        yield
        return
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
            for k, v in config.items()}


def write_study(
    storage: str, study: Mapping[str, Any], trials: Sequence[Trial], *,
    base_name: str | None, base_spec: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]],
    epochs: int = 10, source: str = SOURCE,
) -> str:
    """Store ``trials`` as a new study described by the study-file data ``study``; returns the
    study name. Records are made here (:func:`make_record`), with reuse, pruning and failure
    as each trial says, unless a trial brings its own (real) record; then the base and
    baselines are marked by their canonical hashes, as real runs store them (torch)."""
    real = any(t.record is not None for t in trials)

    def spec_hash(spec: Mapping[str, Any]) -> str:
        return ModelSpec.from_dict(spec).hash() if real else written_hash(spec)

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from dwsearch.study.storage import open_storage, resolve_storage_url

    # Made-up trials keep no weights (as studies before keep_weights: front did not).
    study = {"keep_weights": False, **study}
    config = parse_study_config(study, source="synthetic").to_dict()
    objectives = [str(o) for o in parse_study_config(study, source="synthetic").objectives]
    directions = ["maximize" if o.endswith(":max") else "minimize" for o in objectives]
    backend = open_storage(resolve_storage_url(storage, config["name"]), create=True)
    made = optuna.create_study(study_name=config["name"], storage=backend,
                               directions=directions)
    made.set_user_attr("dwsearch", {
        "format": 1, "name": config["name"], "source": source, "config": config,
        "objectives": objectives,
        "base": {"name": base_name, "hash": spec_hash(base_spec), "spec": dict(base_spec)},
        "baselines": [{"name": b.get("name"), "hash": spec_hash(b)} for b in baselines],
        "created": "2026-11-25T11:00:00+00:00", "versions": dict(VERSIONS),
    })
    # Optuna wants one distribution per parameter for the whole study: every value seen.
    choices: dict[str, list[Any]] = {}
    for t in trials:
        for key, value in _params(t.config).items():
            if value not in choices.setdefault(key, []):
                choices[key].append(value)
    frozen = []
    records: dict[int, RunRecord] = {}
    plain: dict[int, dict[str, Any]] = {}
    for number, t in enumerate(trials):
        record: RunRecord | None
        if t.record is not None:
            record = t.record
        elif t.reused_from is not None and t.reused_from in records:
            record = records[t.reused_from]
            if t.name and t.name != record.name:
                record = replace(record, name=t.name)
            else:
                plain[number] = plain[t.reused_from]
        elif t.status in ("completed", "pruned", "diverged"):
            record = make_record(t.spec, seed=t.seed, epochs=epochs,
                                 stop_after=t.stop_after if t.status == "pruned" else None,
                                 diverge_at=2 if t.status == "diverged" else None,
                                 latency=bool(config["latency"]), name=t.name)
            record = replace(record, **t.record_changes)
        else:
            record = None
        if record is not None:
            records[number] = record
        state = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(
            t.status, TrialState.FAIL)
        info = TrialInfo(
            slot=number if t.retry_of is None else t.retry_of, repeat=t.repeat, seed=t.seed,
            config=t.config, config_hash=config_hash(t.config), role=t.role, factor=t.factor,
            worker=f"synthetic-host:{1000 + number % 4}", reused_from=t.reused_from,
            retry_of=t.retry_of, status=t.status, weights=t.weights)
        attrs: dict[str, Any] = {"dwsearch": info.to_attrs()}
        if record is not None:
            if number not in plain:
                plain[number] = record_dict(record)
            attrs["record"] = plain[number]
        if t.error is not None:
            attrs["error"] = t.error
        values = None
        if state == TrialState.COMPLETE:
            assert record is not None
            values = [_metric(record, o.split(":")[0]) for o in objectives]
        params = _params(t.config)
        frozen.append(create_trial(
            state=state, values=values, params=params,
            distributions={k: CategoricalDistribution(choices[k]) for k in params},
            user_attrs=attrs,
            intermediate_values={m.epoch: m.val_accuracy for m in record.epochs
                                 if m.val_accuracy is not None}
            if record is not None and len(objectives) == 1 else None,
        ))
    with _no_fsync(storage):
        made.add_trials(frozen)
    return str(config["name"])


def _seeds(study_seed: int, repeats: int) -> list[int]:
    return [study_seed + r for r in range(repeats)]


def baseline_study(storage: str, name: str = "synthetic-baseline", repeats: int = 3) -> str:
    """The baseline study as a grid over ``model: [seed_cnn, seed_dwsep]``, ``repeats`` seeds
    each (the base is seed_cnn), with the claims of ``studies/baseline.yaml``."""
    claims = yaml.safe_load((REPO / "studies" / "baseline.yaml").read_text())["claims"]
    study = {"name": name, "base": "seed_cnn", "space": {"model": ["seed_cnn", "seed_dwsep"]},
             "sampler": "grid", "repeats": repeats, "claims": claims,
             "description": "SYNTHETIC: seed_cnn against seed_dwsep, made up by the tests"}
    trials = []
    for model in ("seed_cnn", "seed_dwsep"):
        for r, seed in enumerate(_seeds(0, repeats)):
            spec = seed_spec(model)
            trials.append(Trial({"model": model}, spec, r, seed,
                                "base" if model == "seed_cnn" else "grid"))
    return write_study(storage, study, trials, base_name="seed_cnn",
                       base_spec=seed_spec("seed_cnn"),
                       baselines=[seed_spec("seed_cnn"), seed_spec("seed_dwsep")])


ABLATION_FACTORS: dict[str, list[Any]] = {
    "layers[0:3].block": ["dwsep"],
    "layers[0:3].kernel_size": [5],
    "layers[6].block": ["dwsep"],
    "layers[5].p": [0.0, 0.05],  # 0.05 is the base's own value: its result is reused
}


def ablation_study(storage: str, name: str = "synthetic-ablation", repeats: int = 2) -> str:
    """One factor at a time from seed_cnn, ``repeats`` shared seeds; the factor value equal
    to the base's is a reused result."""
    study = {"name": name, "base": "seed_cnn", "space": ABLATION_FACTORS,
             "sampler": "ablation", "repeats": repeats,
             "description": "SYNTHETIC: one-factor ablation of seed_cnn"}
    base = seed_spec("seed_cnn")
    trials = [Trial({}, base, r, seed, "base", name="seed_cnn")
              for r, seed in enumerate(_seeds(0, repeats))]
    for factor, values in ABLATION_FACTORS.items():
        for value in values:
            config = {factor: value}
            spec = apply_config(base, config)
            for r, seed in enumerate(_seeds(0, repeats)):
                same = spec == base
                trials.append(Trial(config, spec, r, seed, "ablation", factor=factor,
                                    reused_from=r if same else None))
    return write_study(storage, study, trials, base_name="seed_cnn", base_spec=base,
                       baselines=[base])


SEARCH_SPACE: dict[str, Any] = {
    "layers[0:3].block": {"choices": ["conv", "dwsep"], "per_layer": True},
    "layers[6].block": ["conv", "dwsep"],
    "layers[0:3].kernel_size": [3, 5, 7],
    "width": {"low": 0.25, "high": 1.0, "step": 0.01},
    "layers[10].out_features": [256, 512, 1024, 2048],
}


def random_config(rng: random.Random) -> dict[str, Any]:
    config: dict[str, Any] = {f"layers[{i}].block": rng.choice(["conv", "dwsep"])
                              for i in range(3)}
    config["layers[6].block"] = rng.choice(["conv", "dwsep"])
    config["layers[0:3].kernel_size"] = rng.choice([3, 5, 7])
    config["width"] = round(rng.randrange(25, 101) / 100, 2)
    config["layers[10].out_features"] = rng.choice([256, 512, 1024, 2048])
    return config


def search_study(storage: str, name: str = "synthetic-search", n: int = 40, *,
                 seed: int = 1, mishaps: bool = True) -> str:
    """A two-objective search (val_accuracy:max, macs:min) of ``n`` sampled configurations,
    repeats 1. With ``mishaps``: a pruned, a diverged, a failed, an infeasible and an
    interrupted trial (retried as the next), plus a configuration sampled twice (reused)."""
    study = {"name": name, "base": "seed_cnn", "space": SEARCH_SPACE, "sampler": "nsga2",
             "n_trials": max(n, 1), "objectives": ["val_accuracy:max", "macs:min"],
             "pruner": "cost_median", "constraints": {"macs": "<= 600M"},
             "description": "SYNTHETIC: a two-objective search over blocks, kernels and width"}
    rng = random.Random(seed)
    base = seed_spec("seed_cnn")
    trials: list[Trial] = [Trial({}, base, 0, 0, "base", name="seed_cnn")]
    seen: dict[str, int] = {config_hash({}): 0}
    while len(trials) < n:
        config = random_config(rng)
        spec = apply_config(base, config)
        trial = Trial(config, spec, 0, 0, "sample")
        number = len(trials)
        if mishaps and number == 3:
            trial.status, trial.stop_after = "pruned", 3
        elif mishaps and number == 5:
            trial.status = "diverged"
            trial.error = "diverged: non-finite loss at epoch 2, step 17, lr 0.1"
        elif mishaps and number == 7:
            trial.status, trial.error = "error", "RuntimeError: synthetic worker crash"
        elif mishaps and number == 9:
            trial.status = "infeasible"
            trial.error = "infeasible: macs 612.4M > 600M (constraint macs <= 600M)"
        elif mishaps and number == 11:
            trial.status = "interrupted"  # its retry, trial 12, carries retry_of
            trial.error = "interrupted: worker synthetic-host:1003 stopped"
            trials.append(trial)
            trials.append(Trial(config, spec, 0, 0, "sample", retry_of=11))
            continue
        elif mishaps and number == 14:
            trials.append(Trial(dict(trials[13].config), trials[13].spec, 0, 0, "sample",
                                reused_from=13))
            continue
        seen.setdefault(config_hash(config), number)
        trials.append(trial)
    return write_study(storage, study, trials, base_name="seed_cnn", base_spec=base,
                       baselines=[base])


def large_study(storage: str, name: str = "synthetic-10k", n: int = 10_000, seed: int = 7) -> str:
    """``n`` trials of a two-objective search (5% pruned, 1% failed), repeats 1 with shared
    seeds, so a configuration sampled again reuses its first result: the scale test."""
    study = {"name": name, "base": "seed_cnn", "space": SEARCH_SPACE, "sampler": "nsga2",
             "n_trials": n, "objectives": ["val_accuracy:max", "macs:min"],
             "pruner": "cost_median",
             "description": f"SYNTHETIC: {n:,} trials made up by tests/synthetic_study.py"}
    rng = random.Random(seed)
    base = seed_spec("seed_cnn")
    trials: list[Trial] = [Trial({}, base, 0, 0, "base", name="seed_cnn")]
    first: dict[str, int] = {config_hash({}): 0}
    while len(trials) < n:
        config = random_config(rng)
        key = config_hash(config)
        number = len(trials)
        trial = Trial(config, apply_config(base, config), 0, 0, "sample")
        roll = rng.random()
        if key in first:
            trial.reused_from = first[key]
        elif roll < 0.05:
            trial.status, trial.stop_after = "pruned", rng.randint(2, 5)
        elif roll < 0.06:
            trial.status, trial.error = "error", "RuntimeError: synthetic worker crash"
        else:
            first[key] = number
        trials.append(trial)
    return write_study(storage, study, trials, base_name="seed_cnn", base_spec=base,
                       baselines=[base])


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Write a SYNTHETIC study (no training).")
    parser.add_argument("--storage", required=True, help="e.g. sqlite:////tmp/synthetic.db")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--name", default=None)
    options = parser.parse_args()
    start = time.perf_counter()
    made = large_study(options.storage, options.name or f"synthetic-{options.trials}",
                       options.trials)
    print(f"wrote SYNTHETIC study {made!r} ({options.trials:,} trials) to {options.storage} in "
          f"{time.perf_counter() - start:.1f} s")
