"""Benchmarks: the baseline study's training pipeline against dwsearch's, measured in one run.

Everything here is measured, on the machine it runs on; nothing is asserted about speed.
The baseline study is the one this project grew from (``shared/reference/
seed-cnn-vs-depthwise.md``, whose models are ``seed_cnn`` and ``seed_dwsep``). The
baseline-style pipeline is how it trains: a per-image dataset of PIL images through
``Resize(32, 32)``, ``ToTensor`` and ``Normalize(0.5, 0.5)`` transforms and a ``DataLoader``,
a model in fp32 and NCHW on whatever device it finds (the same one dwsearch trains on), each
batch moved there, SGD, and ``loss.item()`` every step for its running loss. It is measured
with 0 DataLoader workers (the baseline's code) and with one worker per core.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from dwsearch.builder import build_model, infer_shapes
from dwsearch.data.cifar10 import CIFAR10_CLASSES
from dwsearch.data.config import DataConfig
from dwsearch.data.load import load_dataset
from dwsearch.data.loader import BatchLoader
from dwsearch.data.tensors import DataSplits, ImageTensors, stratified_subset
from dwsearch.errors import ConfigError, SpecError
from dwsearch.run import train_spec
from dwsearch.runtime import (
    AMP_DTYPES,
    device_name,
    resolve_device,
    resolve_precision,
    seed_everything,
    torch_threads,
    usable_cpus,
)
from dwsearch.train.config import Precision, TrainConfig
from dwsearch.train.loop import fit
from dwsearch.zoo import load_spec

__all__ = [
    "BenchResult",
    "MemoryResult",
    "ThroughputResult",
    "baseline_pipeline_throughput",
    "dataset_load_times",
    "dwsearch_throughput",
    "peak_memory",
    "run_bench",
]


class BaselineStyleDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """torchvision's CIFAR10 dataset, in effect: HWC uint8 arrays turned into a PIL image
    and transformed one image at a time."""

    def __init__(self, data: ImageTensors) -> None:
        from torchvision import transforms

        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.tolist()
        self.transform = transforms.Compose([
            transforms.Resize((32, 32)),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return self.transform(image), self.labels[index]


@dataclass(frozen=True)
class ThroughputResult:
    """Training throughput over ``steps`` timed steps after ``warmup_steps`` untimed ones."""

    pipeline: str  # "baseline" or "dwsearch"
    spec: str
    images_per_second: float
    steps: int
    batch_size: int
    precision: str
    channels_last: bool
    data_seconds: float = 0.0  # time spent producing batches (dwsearch pipeline only)
    epoch_seconds: float = 0.0
    workers: int = 0  # DataLoader worker processes (baseline pipeline only)


def baseline_pipeline_throughput(
    spec_name: str,
    data: ImageTensors,
    *,
    steps: int = 16,
    warmup_steps: int = 2,
    batch_size: int = 128,
    num_workers: int = 0,
    seed: int = 0,
    device: str = "cpu",
) -> ThroughputResult:
    """Training images/s of the baseline study's way of training (see the module docstring) on
    ``device``, with ``num_workers`` DataLoader worker processes."""
    seed_everything(seed)
    dev = resolve_device(device)
    model = build_model(load_spec(spec_name)).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(
        BaselineStyleDataset(data), batch_size=batch_size, shuffle=True, num_workers=num_workers,
        drop_last=True,
    )
    needed = steps + warmup_steps
    if len(loader) < needed:
        raise ConfigError(f"need {needed * batch_size} images for {needed} steps, "
                         f"have {len(data)}")
    model.train()
    running_loss = 0.0
    start = 0.0
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    for step in range(needed):
        if step == warmup_steps:
            start = time.perf_counter()
        inputs, labels = next(batches)
        inputs, labels = inputs.to(dev), labels.to(dev)
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # a host sync per step, as the baseline's logging does
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    return ThroughputResult("baseline", spec_name, steps * batch_size / seconds, steps, batch_size,
                            "fp32", False, epoch_seconds=seconds, workers=num_workers)


def dwsearch_throughput(
    spec_name: str,
    data: ImageTensors,
    config: TrainConfig,
    *,
    steps: int = 16,
) -> ThroughputResult:
    """Training images/s of dwsearch's trainer: two epochs of ``steps`` batches each over the
    same images, the first untimed (warm-up); also the share of the timed epoch spent
    producing batches, measured by iterating the same loader alone."""
    n = steps * config.batch_size
    if len(data) < n:
        raise ConfigError(f"need {n} images for {steps} steps, have {len(data)}")
    subset = data.subset(torch.arange(n))
    device = str(resolve_device(config.device))
    seed_everything(config.seed)
    model = build_model(load_spec(spec_name))
    loader = BatchLoader(subset, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                         device=device, channels_last=config.channels_last, drop_last=True)
    result = fit(model, loader, None, replace(config, epochs=2), progress=False)
    if result.status != "completed" or len(result.epochs) != 2:
        raise RuntimeError(f"benchmark training did not complete: {result.message}")
    timed = result.epochs[1]
    loader.set_epoch(1)
    start = time.perf_counter()
    for inputs, _labels in loader:
        inputs.sum()  # touch the batch, as training would
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    data_seconds = time.perf_counter() - start
    return ThroughputResult(
        "dwsearch", spec_name, timed.images_per_second, steps, config.batch_size,
        resolve_precision(config.precision, device), config.channels_last,
        data_seconds=data_seconds, epoch_seconds=timed.seconds,
    )


def dataset_load_times(data_dir: str | None) -> tuple[float, float]:
    """(cold, warm) seconds to load CIFAR-10: decoding into a fresh cache, then from it."""
    with tempfile.TemporaryDirectory() as cache, _env("DWSEARCH_CACHE_DIR", cache):
        cold = _timed(lambda: load_dataset("cifar10", data_dir=data_dir, download=False))
        warm = _timed(lambda: load_dataset("cifar10", data_dir=data_dir, download=False))
    return cold, warm


def _timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


@contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


# -- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryResult:
    """Peak memory of training or inference steps, in MiB.

    CPU: process resident set size (VmHWM) in a fresh process, minus its RSS just before the
    model was built (``added_mib``). CUDA: ``torch.cuda.max_memory_allocated``.
    """

    spec: str
    mode: str  # "train" or "inference"
    device: str
    batch_size: int
    precision: str
    peak_mib: float
    added_mib: float


def _rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _memory_child(
    spec_name: str, mode: str, batch: tuple[torch.Tensor, torch.Tensor], config: TrainConfig,
    steps: int,
) -> tuple[float, float]:
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, str(device))
    if config.threads:
        torch.set_num_threads(config.threads)
    dtype = AMP_DTYPES.get(precision)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    inputs = batch[0].to(device).contiguous(memory_format=memory_format)
    labels = batch[1].to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_kib("VmRSS") / 1024
    model = build_model(load_spec(spec_name)).to(device).to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if mode == "train":
                model.train()
                loss = nn.functional.cross_entropy(model(inputs).float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            else:
                model.eval()
                with torch.inference_mode():
                    model(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _rss_kib("VmHWM") / 1024
    return peak, peak - before


def peak_memory(
    spec_name: str, mode: str, batch: tuple[torch.Tensor, torch.Tensor], config: TrainConfig,
    *, steps: int = 3,
) -> MemoryResult:
    """Peak memory of ``steps`` training or inference steps on ``batch``, in a fresh process
    so that earlier allocations (and the allocator's caches) do not blur the figure."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        peak, added = pool.apply(_memory_child, (spec_name, mode, batch, config, steps))
    device = str(resolve_device(config.device))
    return MemoryResult(spec_name, mode, device, len(batch[1]),
                        resolve_precision(config.precision, device), peak, added)


# -- the whole benchmark --------------------------------------------------------------------


@dataclass
class BenchResult:
    machine: str
    device: str
    threads: int
    torch_version: str
    date: str
    data_source: str
    throughput: list[ThroughputResult] = field(default_factory=list)
    memory: list[MemoryResult] = field(default_factory=list)
    load_cold_seconds: float | None = None
    load_warm_seconds: float | None = None
    accuracy: list[dict[str, Any]] = field(default_factory=list)

    def ratios(self, workers: int = 0) -> dict[str, float]:
        """dwsearch images/s over the baseline pipeline's with ``workers`` DataLoader workers."""
        theirs = {
            t.spec: t.images_per_second
            for t in self.throughput if t.pipeline == "baseline" and t.workers == workers
        }
        return {
            t.spec: t.images_per_second / theirs[t.spec]
            for t in self.throughput if t.pipeline == "dwsearch" and t.spec in theirs
        }

    def to_dict(self) -> dict[str, Any]:
        workers = sorted({t.workers for t in self.throughput if t.pipeline == "baseline"})
        return {**asdict(self), "ratios": {w: self.ratios(w) for w in workers}}

    def to_markdown(self) -> str:
        lines = [
            f"Measured {self.date} on {self.machine} ({self.device}, {self.threads} threads), "
            f"torch {self.torch_version}; data: {self.data_source}.",
        ]
        baselines = [t for t in self.throughput if t.pipeline == "baseline"]
        if self.throughput:
            lines += [
                "",
                "| spec | pipeline | DataLoader workers | precision | img/s | dwsearch / this "
                "| batch production, share of epoch |",
                "|---|---|---:|---|---:|---:|---:|",
            ]
        for t in self.throughput:
            if t.pipeline != "dwsearch":
                continue
            share = f"{t.data_seconds / t.epoch_seconds:.2%}" if t.epoch_seconds else "-"
            layout = ", channels_last" if t.channels_last else ""
            for base in (b for b in baselines if b.spec == t.spec):
                lines.append(
                    f"| {t.spec} | baseline-style | {base.workers} | fp32 | "
                    f"{base.images_per_second:.1f} | "
                    f"{t.images_per_second / base.images_per_second:.2f}x | - |"
                )
            lines.append(f"| {t.spec} | dwsearch | - | {t.precision}{layout} | "
                         f"{t.images_per_second:.1f} | 1.00x | {share} |")
        if self.load_cold_seconds is not None:
            lines += ["", f"CIFAR-10 load (60,000 images): cold {self.load_cold_seconds:.2f} s "
                          f"(decode + cache write), warm {self.load_warm_seconds:.3f} s."]
        if self.memory:
            lines += ["", "| spec | mode | batch | precision | peak MiB | added by the model run "
                          "MiB |", "|---|---|---:|---|---:|---:|"]
            lines += [f"| {m.spec} | {m.mode} | {m.batch_size} | {m.precision} | "
                      f"{m.peak_mib:.0f} | {m.added_mib:.0f} |" for m in self.memory]
        if self.accuracy:
            lines += ["", "| spec | precision | seed | train images | epochs | val accuracy "
                          "| img/s |", "|---|---|---:|---:|---:|---:|---:|"]
            lines += [f"| {a['spec']} | {a['precision']} | {a['seed']} | {a['train_images']:,} "
                      f"| {a['epochs']} | {a['val_accuracy']:.2%} ({a['val_images']:,} images) "
                      f"| {a['images_per_second']:.0f} |" for a in self.accuracy]
        return "\n".join(lines)


def run_bench(
    specs: list[str],
    *,
    data_dir: str | None = None,
    steps: int = 16,
    baseline_workers: tuple[int, ...] | None = None,
    config: TrainConfig | None = None,
    memory: bool = True,
    load_times: bool = True,
    throughput: bool = True,
    accuracy_subset: int | None = None,
    accuracy_epochs: int = 2,
    accuracy_seeds: tuple[int, ...] = (0,),
    val_size: int = 5000,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Measure, in this one process and machine: baseline-pipeline vs dwsearch training images/s
    per spec (the baseline pipeline once per entry of ``baseline_workers``, default 0 and one worker
    per core; both pipelines on the configured device), dataset load times, peak memory per
    spec in training and inference, and (with ``accuracy_subset``) validation accuracy after
    training in fp32 and in the configured precision, once per seed in ``accuracy_seeds`` so
    the spread between seeds shows the noise."""
    config = config or TrainConfig()
    device = resolve_device(config.device)
    for spec in specs:
        _check_bench_spec(spec)  # before minutes of loading and measuring
    workers = (baseline_workers if baseline_workers is not None
               else tuple(sorted({0, usable_cpus()})))
    with torch_threads(config.threads) as threads:
        splits: DataSplits = load_dataset("cifar10", data_dir=data_dir, download=False,
                                          val_size=val_size)
        result = BenchResult(
            machine=device_name(device), device=str(device), threads=threads,
            torch_version=torch.__version__, date=time.strftime("%Y-%m-%d"),
            data_source=splits.source,
        )
        if load_times:
            result.load_cold_seconds, result.load_warm_seconds = dataset_load_times(data_dir)
            log(f"load: cold {result.load_cold_seconds:.2f} s, "
                f"warm {result.load_warm_seconds:.3f} s")
        for spec in specs if throughput else []:
            for n in workers:
                theirs = baseline_pipeline_throughput(spec, splits.train, steps=steps,
                                                      num_workers=n, device=str(device))
                log(f"{spec}: baseline pipeline ({n} workers) "
                    f"{theirs.images_per_second:.1f} images/s")
                result.throughput.append(theirs)
            ours = dwsearch_throughput(spec, splits.train, config, steps=steps)
            log(f"{spec}: dwsearch {ours.images_per_second:.1f} images/s ({ours.precision})")
            result.throughput.append(ours)
        if memory:
            batch = (_normalized(splits.test.images[: config.batch_size]),
                     splits.test.labels[: config.batch_size])
            for spec in specs:
                for mode in ("train", "inference"):
                    mem = peak_memory(spec, mode, batch, config)
                    log(f"{spec} {mode}: peak {mem.peak_mib:.0f} MiB, "
                        f"added {mem.added_mib:.0f} MiB")
                    result.memory.append(mem)
        fast = cast(Precision, resolve_precision(config.precision, str(device)))
        precisions: list[Precision] = ["fp32"] if fast == "fp32" else ["fp32", fast]
        for spec in specs if accuracy_subset else []:
            for run_seed in accuracy_seeds:
                for precision in precisions:
                    # fp32 as the baseline trains (NCHW) against the configured fast path.
                    run_config = replace(
                        config, precision=precision, epochs=accuracy_epochs, seed=run_seed,
                        channels_last=config.channels_last and precision != "fp32",
                    )
                    row = _accuracy_run(spec, splits, run_config, accuracy_subset or 0,
                                        val_size)
                    result.accuracy.append(row)
                    log(f"{spec} seed {run_seed} {precision}: val accuracy "
                        f"{row['val_accuracy']:.2%} ({row['images_per_second']:.0f} images/s)")
    return result


def _check_bench_spec(name: str) -> None:
    """A spec the benchmark can run: it builds, and it takes CIFAR-10 as it comes (3x32x32
    images, 10 classes), which the baseline-style pipeline feeds it unchanged."""
    spec = load_spec(name)
    infer_shapes(spec)
    if spec.input_shape != (3, 32, 32) or spec.num_classes != len(CIFAR10_CLASSES):
        raise SpecError(
            f"{name}: the benchmark trains on CIFAR-10 as it comes (input [3, 32, 32], "
            f"num_classes 10); this spec has input {list(spec.input_shape)}, num_classes "
            f"{spec.num_classes}"
        )


def _normalized(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255).sub(0.5).div(0.5)


def _accuracy_run(
    spec: str, splits: DataSplits, config: TrainConfig, train_images: int, val_size: int
) -> dict[str, Any]:
    """One short training run through :func:`dwsearch.run.train_spec`, on a stratified
    subset of the training split; validation on the whole validation split."""
    subset = splits.train.subset(stratified_subset(splits.train.labels, train_images, 0))
    record = train_spec(
        spec, replace(splits, train=subset), config, test=False, progress=False,
        data_config=DataConfig(val_size=val_size, train_subset=train_images),
    )
    return {
        "spec": spec, "precision": record.precision, "seed": config.seed,
        "train_images": record.train_images,
        "epochs": len(record.epochs), "status": record.status,
        "val_accuracy": record.val_accuracy if record.val_accuracy is not None else float("nan"),
        "val_images": record.val_images,
        "images_per_second": float(np.mean([m.images_per_second for m in record.epochs])),
    }


# -- studies: trials per hour ----------------------------------------------------------------


@dataclass(frozen=True)
class StudyRate:
    """How fast a way of running a study's trials got through them."""

    mode: str  # "by hand", "run-study", "run-study --jobs N"
    trials: int
    seconds: float  # wall, from the first command to the last stored trial

    @property
    def trials_per_hour(self) -> float:
        return self.trials * 3600.0 / self.seconds


def _train_arguments(spec_file: Path, train: TrainConfig, data: DataConfig) -> list[str]:
    """``dwsearch train`` arguments that reproduce one trial's run by hand."""
    args = [str(spec_file), "--quiet", "--json", "--dataset", data.dataset,
            "--val-size", str(data.val_size), "--seed", str(train.seed)]
    if data.data_dir:
        args += ["--data-dir", data.data_dir]
    if data.train_subset:
        args += ["--subset", str(data.train_subset)]
    if data.test_subset:
        args += ["--test-subset", str(data.test_subset)]
    defaults = TrainConfig()
    for name, value in asdict(train).items():
        if name == "seed" or value == getattr(defaults, name) or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            args += [flag, str(value)]
    return args


def _threads_run(plan: Any, storage: str, count: int, device: str,
                 data_dir: str | None) -> int:
    """``count`` workers as threads of this process on one study: for measuring only. They
    share torch's global RNG and thread count, so their runs are not reproducible from their
    seeds; that is why run-study's --jobs starts processes."""
    import threading

    from dwsearch.runtime import usable_cpus
    from dwsearch.study.plan import open_study
    from dwsearch.study.worker import StudyData, Worker, WorkerOptions

    options = WorkerOptions(device=device, data_dir=data_dir,
                            threads=max(1, usable_cpus() // count))
    data = StudyData(plan, options).preload()
    open_study(plan, storage, create=True)  # lays the slots out once
    counts: list[int] = []
    workers = [
        threading.Thread(target=lambda i=i: counts.append(Worker(
            plan, open_study(plan, storage, worker=f"thread{i}"),
            replace(options, worker_id=f"thread{i}"), data=data).run()))
        for i in range(count)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sum(counts)


def study_rates(
    study_file: str | Path,
    *,
    jobs: tuple[int, ...] = (1, 2),
    thread_jobs: tuple[int, ...] = (),
    by_hand: bool = True,
    n_trials: int | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> list[StudyRate]:
    """Trials per hour for one study's trials, measured in one run: each trial as its own
    ``dwsearch train`` command (by hand: a fresh process, imports and data load every time),
    then ``run-study`` with each number of worker processes in ``jobs``, each into a fresh
    temporary storage, and (``thread_jobs``) workers as threads of one process, for
    comparison. ``n_trials`` takes the first trials of the plan."""
    import subprocess
    import sys

    from dwsearch.study.plan import derive_seed, make_plan
    from dwsearch.study.runner import load_config, run_study
    from dwsearch.study.worker import WorkerOptions

    config = load_config(study_file)
    plan = make_plan(config, n_trials)
    slots = [s for s in plan.slots if s.config is not None][: n_trials or len(plan.slots)]
    if len(slots) != len(plan.slots) or not slots:
        raise ConfigError(f"{study_file}: bench --study needs a grid or ablation study (its "
                          f"trials are known in advance)")
    rates: list[StudyRate] = []
    data = config.data_config(**({"data_dir": data_dir} if data_dir else {}))
    with tempfile.TemporaryDirectory() as tmp:
        if by_hand:
            start = time.perf_counter()
            for index, slot in enumerate(slots):
                spec, changes = plan.space.apply(slot.config or {})
                spec_file = Path(tmp) / f"trial-{index}.yaml"
                spec_file.write_text(spec.to_yaml())
                train = config.train_config(**changes, device=device,
                                            seed=derive_seed(config.model.seed, slot.repeat))
                command = [sys.executable, "-m", "dwsearch", "train",
                           *_train_arguments(spec_file, train, data)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"dwsearch train failed: {done.stderr.strip()[-300:]}")
                log(f"by hand: trial {index + 1}/{len(slots)} done")
            rates.append(StudyRate("by hand (dwsearch train per trial)", len(slots),
                                   time.perf_counter() - start))
            log(f"by hand: {rates[-1].trials_per_hour:.1f} trials/hour")
        for count in jobs:
            storage = f"sqlite:///{Path(tmp) / f'jobs{count}.db'}"
            start = time.perf_counter()
            outcome = run_study(config, storage=storage, n_trials=len(slots), jobs=count,
                                options=WorkerOptions(device=device, data_dir=data_dir))
            label = "run-study" if count == 1 else f"run-study --jobs {count}"
            rates.append(StudyRate(label, outcome.finished, time.perf_counter() - start))
            log(f"{label}: {rates[-1].trials_per_hour:.1f} trials/hour")
        for count in thread_jobs:
            storage = f"sqlite:///{Path(tmp) / f'threads{count}.db'}"
            start = time.perf_counter()
            ran = _threads_run(plan, storage, count, device, data_dir)
            label = f"{count} worker threads (measurement only)"
            rates.append(StudyRate(label, ran, time.perf_counter() - start))
            log(f"{label}: {rates[-1].trials_per_hour:.1f} trials/hour")
    return rates
