"""Deployment inside studies: a deploy: section measures every trained model where it ships
(ExecuTorch and ONNX Runtime, fp32 and int8, real runtimes), its metrics are objectives and
constraints of the one metrics table, a block a runtime cannot take fails its trial with the
reason while the study goes on, and nothing is left in the temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from studyutil import make_images, study_dict
from torch import nn

from dwsearch import list_blocks, register_block
from dwsearch.errors import StudyError
from dwsearch.metrics import DEPLOY_PRECISIONS, DEPLOY_RUNTIMES, METRICS
from dwsearch.study.config import parse_study_config
from dwsearch.study.results import load_results
from dwsearch.study.runner import run_study
from dwsearch.study.worker import WorkerOptions

DEPLOY = {"runtimes": ["executorch", "onnxruntime"], "precisions": ["fp32", "int8"],
          "calibration_images": 24, "check_images": 12, "blocks": 2, "calls_per_block": 2,
          "warmup": 1}


class ErfBlock(nn.Module):
    """An op neither runtime has (erfinv): a block that trains but cannot ship."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(torch.tanh(x) * 0.5)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path / "studies"))
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))


def run(data: dict[str, Any]) -> Any:
    return run_study(parse_study_config(data, "t.yaml"), jobs=1,
                     options=WorkerOptions(device="cpu", poll=0.1))


def test_the_metrics_table_lowers_to_what_deploy_has() -> None:
    from dwsearch.deploy import PRECISIONS, RUNTIMES

    assert (tuple(RUNTIMES), tuple(PRECISIONS)) == (DEPLOY_RUNTIMES, DEPLOY_PRECISIONS)


@pytest.mark.slow
def test_every_trained_model_is_measured_where_it_ships(images: Path, tmp_path: Path) -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    outcome = run(study_dict(images, deploy=DEPLOY, space={"layers[0,2].block": ["dwsep"]},
                             objectives=["val_accuracy", "int8_val_accuracy",
                                         "latency_executorch_int8", "size_onnxruntime_int8"]))
    assert outcome.states == {"COMPLETE": 1}
    for trial in load_results("t").trials:
        record = trial.record
        assert record is not None and record.deploy is not None
        programs = record.deploy["programs"]
        assert set(programs) == {f"{r}/{p}" for r in DEPLOY_RUNTIMES for p in DEPLOY_PRECISIONS}
        for key, entry in programs.items():
            assert entry["median_ms"] > 0 and entry["size_bytes"] > 0, key
            if key.endswith("fp32"):  # lowered programs compute what eager PyTorch does
                assert entry["max_abs_diff"] <= 1e-3, key
            else:  # on every validation image, calibrated on training images
                assert 0 <= entry["val_accuracy"] <= 1 and entry["calibration_images"] == 24
        assert trial.values == (
            record.val_accuracy, programs["executorch/int8"]["val_accuracy"],
            programs["executorch/int8"]["median_ms"], programs["onnxruntime/int8"]["size_bytes"])
        assert METRICS["int8_accuracy_drop"].read(record) == pytest.approx(
            record.val_accuracy - programs["executorch/int8"]["val_accuracy"])
    left = {n for n in set(os.listdir(tempfile.gettempdir())) - before
            if n.endswith((".pte", ".onnx", ".onnx.data"))}
    assert not left
    # The report has a Deployment section built from these records.
    from dwsearch.report import make_report

    paths = make_report(load_results("t"), tmp_path / "report")
    html = paths.html.read_text()
    assert 'id="deployment"' in html and "Kendall" in html
    for runtime in DEPLOY_RUNTIMES:
        for precision in DEPLOY_PRECISIONS:
            assert f'id="fig-pareto_{runtime}_{precision}"' in html
    assert "int8 drop (points)" in paths.markdown.read_text()


def test_rank_correlation_is_kendalls_tau() -> None:
    """Ground truth by hand: in (1, 2, 3, 4) against (1, 3, 2, 4), 5 of the 6 pairs are
    ordered alike and 1 is not: tau = (5 - 1) / 6."""
    import pandas as pd

    from dwsearch.report.sections import _kendall

    tau, _, n = _kendall(pd.Series([1, 2, 3, 4]), pd.Series([1.0, 3.0, 2.0, 4.0]))
    assert (tau, n) == (pytest.approx(4 / 6), 4)
    assert _kendall(pd.Series([1, 2]), pd.Series([2, 1]))[2] == 2  # too few: no tau


def test_a_block_a_runtime_cannot_take_fails_its_trial_and_the_study_goes_on(
        images: Path) -> None:
    if "deploy_study_erf" not in list_blocks():
        register_block("deploy_study_erf")(ErfBlock)
    outcome = run(study_dict(images, deploy={**DEPLOY, "runtimes": ["executorch"],
                                             "precisions": ["fp32"]},
                             space={"layers[2].block": ["conv", "deploy_study_erf"]}))
    assert outcome.states == {"COMPLETE": 1, "FAIL": 1}
    failed = next(t for t in load_results("t").trials if t.state == "FAIL")
    assert failed.info.status == "error" and failed.error is not None
    assert failed.error.startswith("deploy: layers[2] (deploy_study_erf): runtime "
                                   "'executorch' (fp32) cannot lower it: "), failed.error
    assert failed.record is not None and failed.record.val_accuracy is not None  # kept


def test_constraints_on_deployed_metrics_are_checked_after_training(images: Path) -> None:
    outcome = run(study_dict(images, deploy={**DEPLOY, "runtimes": ["onnxruntime"],
                                             "precisions": ["int8"]},
                             space={"layers[0,2].block": ["conv"]},
                             constraints={"int8_val_accuracy": ">= 1.01"}))
    assert outcome.states == {"FAIL": 1}
    for trial in load_results("t").trials:
        assert trial.info.status == "infeasible" and trial.record is not None
        assert "int8_val_accuracy >= 1.01" in (trial.error or "")
        assert "measured after training" in (trial.error or "")


@pytest.mark.parametrize(("changes", "message"), [
    ({"objectives": ["val_accuracy", "latency_executorch_int8"]},
     "objectives[1]: latency_executorch_int8 is measured where models ship, and deploy: "
     "measures runtimes none in fp32; add e.g. deploy: {runtimes: [executorch], precisions: "
     "[fp32, int8]}"),
    ({"objectives": ["val_accuracy", "int8_val_accuracy"],
      "deploy": {"runtimes": ["onnxruntime"]}},
     "objectives[1]: int8_val_accuracy is measured where models ship"),
    ({"constraints": {"size_onnxruntime_fp32": "<= 1M"}, "deploy": {"runtimes": ["executorch"]}},
     "constraints.size_onnxruntime_fp32: size_onnxruntime_fp32 is measured where models ship"),
    ({"deploy": {"runtimes": ["tensorrt"]}}, "deploy.runtimes[0]: Input should be"),
    ({"deploy": {"runtimes": ["executorch", "executorch"]}}, "each at most once"),
    ({"deploy": {"runtimes": ["executorch"], "threads": 0}}, "deploy.threads"),
])
def test_a_deploy_section_that_cannot_measure_what_is_asked_is_one_line(
        images: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(StudyError) as caught:
        parse_study_config(study_dict(images, **changes), "t.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)
