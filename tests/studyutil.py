"""Helpers for study tests: a tiny real image-folder dataset and small study files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

TINY_BASE: dict[str, Any] = {
    "input": [3, 16, 16],
    "num_classes": 3,
    "layers": [
        {"block": "conv", "out_channels": 8},
        {"block": "maxpool", "kernel_size": 2},
        {"block": "conv", "out_channels": 16},
        {"block": "global_avgpool"},
        {"block": "linear", "out_features": 3},
    ],
}


def make_images(root: Path, per_class: int = 24, test_per_class: int = 6) -> Path:
    """Three classes of 16x16 PNG images, each class a colour with noise: learnable."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name, rgb in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(rng.normal(rgb, 40, (16, 16, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def study_dict(data_dir: Path, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "base": TINY_BASE,
        "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "val_size": 12},
        "train": {"epochs": 1, "lr": 0.05, "batch_size": 16, "device": "cpu", "threads": 1,
                  "precision": "fp32"},
        "space": {"layers[0,2].block": ["conv", "dwsep"]},
        "objectives": ["val_accuracy", "macs"],
        "sampler": "grid",
        "latency": False,
    }
    base.update(changes)
    return base


def write_study(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dwsearch(*args: str, env: dict[str, str] | None = None, **kwargs: Any
             ) -> subprocess.Popen[str]:
    """``python -m dwsearch ARGS`` in a child process (a real console run). Ctrl-C reaches it
    as in a terminal: a shell's background job (``make test &``, some CI runners) starts with
    SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt."""
    return subprocess.Popen([sys.executable, "-m", "dwsearch", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})},
                            preexec_fn=_default_sigint, **kwargs)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def trial_states(url: str, name: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(number, state, dwsearch info) of every trial, read with plain Optuna."""
    import optuna

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return []  # not created yet (opening it would create an empty one)
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return []
    except Exception as err:
        from dwsearch.study.storage import lost_creation_race

        if lost_creation_race(err):  # the worker is creating the tables this instant
            return []
        raise
    return [(t.number, t.state.name, t.user_attrs.get("dwsearch", {})) for t in study.trials]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
