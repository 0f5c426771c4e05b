"""Compression inside studies: train.distill (a teacher file or a trial of another study),
prune: (from trial or from base, a target named by a model, when:), qat:. Real training on a
tiny real image folder, real Torch-Pruning and ExecuTorch; the records say what was done, the
reuse keys tell compressed runs apart, and every mistake is one located line before anything
trains (or a failed trial with its reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from studyutil import TINY_BASE, make_images, study_dict

from dwsearch.compress.config import DistillConfig
from dwsearch.compress.distill import load_teacher
from dwsearch.data.config import DataConfig
from dwsearch.errors import CompressError, DwsearchError, StudyError
from dwsearch.spec import ModelSpec
from dwsearch.study.config import parse_study_config
from dwsearch.study.results import load_results
from dwsearch.study.runner import run_study
from dwsearch.study.worker import WorkerOptions
from dwsearch.train.config import TrainConfig

pytest.importorskip("torch_pruning")

RECIPE = {"epochs": 1, "lr": 0.05, "batch_size": 16, "device": "cpu", "threads": 1,
          "precision": "fp32"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def teacher(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base, trained: a dwsearch checkpoint with its spec."""
    from dwsearch.run import train_spec

    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    train_spec(ModelSpec.from_dict(TINY_BASE), DataConfig(dataset="imagefolder",
                                                           data_dir=str(images), val_size=12),
               TrainConfig(**RECIPE), test=False, progress=False, checkpoint=path)
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path / "studies"))
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))


def run(data: dict[str, Any], storage: str | None = None) -> Any:
    return run_study(parse_study_config(data, "t.yaml"), storage=storage, jobs=1,
                     options=WorkerOptions(device="cpu", poll=0.1))


def distilled(images: Path, teacher: Path, **changes: Any) -> dict[str, Any]:
    return study_dict(images, train={**RECIPE, "distill": {"teacher": str(teacher),
                                                           "alpha": 0.7, "temperature": 2}},
                      space={"train.distill.alpha": [0.0, 0.7]}, repeats=2, **changes)


def test_distillation_in_a_study_is_paired_by_seed_and_alpha_zero_is_the_plain_run(
        images: Path, teacher: Path) -> None:
    outcome = run(distilled(images, teacher))
    assert outcome.states == {"COMPLETE": 4}
    trials = load_results("t").trials
    by_alpha: dict[float, list[Any]] = {}
    for t in trials:
        by_alpha.setdefault(t.config["train.distill.alpha"], []).append(t)
    assert sorted(t.info.seed for t in by_alpha[0.0]) == sorted(t.info.seed
                                                               for t in by_alpha[0.7])
    for t in by_alpha[0.0]:  # plain training: no teacher in its record or its key
        assert t.record.compression is None
    identity = load_teacher(DistillConfig(str(teacher))).identity()
    for t in by_alpha[0.7]:
        d = t.record.compression["distill"]
        assert (d["teacher_spec_hash"], d["teacher_weights"]) == (
            identity["teacher_spec_hash"], identity["teacher_weights"])
        assert (d["alpha"], d["temperature"], d["teacher_logits"]) == (0.7, 2.0, "cached")
    keys = {t.info.run_key for t in trials}
    assert len(keys) == 4  # two seeds x with and without the teacher: four different runs
    # The undistilled runs are the runs of a study without any teacher: same keys.
    plain = study_dict(images, name="u", train=RECIPE, space={"train.lr": [0.05]}, repeats=2)
    run(plain)
    assert {t.info.run_key for t in load_results("u").trials} == {
        t.info.run_key for t in by_alpha[0.0]}


def test_a_trial_of_a_finished_study_teaches(images: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'teachers.db'}"
    run(study_dict(images, name="teachers", train=RECIPE, space={"train.lr": [0.05]},
                   keep_weights=True), url)
    student = study_dict(images, train={**RECIPE, "distill": {
        "teacher": {"study": "teachers", "trial": 0}, "alpha": 0.5}},
        space={"layers[0,2].block": ["dwsep"]})
    assert run(student, url).states == {"COMPLETE": 1}
    record = next(t for t in load_results("t", url).trials).record
    assert record.compression["distill"]["teacher"].endswith("teachers-trial-0.pt")
    missing = {**student, "train": {**RECIPE, "distill": {
        "teacher": {"study": "teachers", "trial": 7}}}}
    with pytest.raises(StudyError, match=r"^t\.yaml: train\.distill\.teacher: study "
                                         r"'teachers' has no trial 7; it holds trials 0\.\.0$"):
        run(missing, url)


def test_a_teacher_that_cannot_teach_stops_the_study_before_anything(
        images: Path, teacher: Path, tmp_path: Path) -> None:
    other = dict(TINY_BASE, num_classes=5, layers=[*TINY_BASE["layers"][:-1],
                                                   {"block": "linear", "out_features": 5}])
    wide = dict(TINY_BASE, input=[3, 32, 32])
    for base, message in ((other, r"has 3 classes but the student has 5"),
                          (wide, r"takes input \(3, 16, 16\) but the student takes "
                                 r"\(3, 32, 32\)")):
        url = f"sqlite:///{tmp_path / 'none.db'}"
        with pytest.raises(CompressError, match=r"^t\.yaml: train\.distill\.teacher: .*"
                                                + message):
            run(distilled(images, teacher, base=base), url)
        assert not (tmp_path / "none.db").exists()  # no study was made
    with pytest.raises(CompressError, match=r"^t\.yaml: train\.distill\.teacher: .*nope\.pt: "
                                            r"no such checkpoint file$"):
        run(distilled(images, tmp_path / "nope.pt"))


def test_pruned_trials_meet_the_target_named_by_a_model_and_record_their_origin(
        images: Path) -> None:
    dwsep = {**TINY_BASE, "layers": [dict(layer, block="dwsep") if layer["block"] == "conv"
                                     and i == 2 else layer
                                     for i, layer in enumerate(TINY_BASE["layers"])]}
    from dwsearch.builder import build_model
    from dwsearch.costs import profile

    target = profile(build_model(ModelSpec.from_dict(dwsep))).macs
    data = study_dict(images, train=RECIPE, space={"layers[2].block": ["conv", "dwsep"]},
                      prune={"target": {"macs": "dwsep.yaml"}, "finetune_epochs": 1,
                             "when": {"layers[2].block": "conv"}})
    folder = images.parent / "study"
    folder.mkdir(exist_ok=True)
    (folder / "dwsep.yaml").write_text(yaml.safe_dump(dwsep))
    config = parse_study_config(data, "t.yaml", folder)
    outcome = run_study(config, jobs=1, options=WorkerOptions(device="cpu", poll=0.1))
    assert outcome.states == {"COMPLETE": 2}
    trials = {t.config["layers[2].block"]: t for t in load_results("t").trials}
    assert trials["dwsep"].record.compression is None
    record = trials["conv"].record
    prune = record.compression["prune"]
    assert record.macs <= target < prune["before"]["macs"]
    assert (prune["after"]["macs"], prune["value"]) == (record.macs, target)
    assert prune["from"]["source"] == "trial" and prune["finetune_epochs"] == 1
    assert len(record.epochs) == 1 and prune["source_train_seconds"] > 0
    assert 0 <= prune["val_accuracy_pruned"] <= 1


def test_prune_from_base_trains_the_base_once_per_seed(images: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    data = study_dict(images, train=RECIPE, space={"train.lr": [0.05, 0.02]},
                      prune={"from": "base", "target": {"macs": 0.6}})
    assert run(data, url).states == {"COMPLETE": 2}
    trials = sorted(load_results("t", url).trials, key=lambda t: t.number)
    origins = [t.record.compression["prune"] for t in trials]
    assert origins[0]["from"]["weights"] == origins[1]["from"]["weights"]  # one trained base
    assert origins[0]["source_train_seconds"] > 0 and origins[1]["source_train_seconds"] == 0
    assert len(list((tmp_path / "s-weights" / "sources").glob("source-*.pt"))) == 1


def test_compressed_studies_run_in_worker_processes(images: Path, teacher: Path,
                                                    tmp_path: Path) -> None:
    """--jobs 2: each worker process resolves the teacher and the target itself; two
    processes pruning from one base leave one kept base (written whole) and no temporary
    file, and every trial is distilled and pruned as one process would."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    data = study_dict(images, train={**RECIPE, "distill": {"teacher": str(teacher)}},
                      space={"train.lr": [0.05, 0.03, 0.02, 0.01]},
                      prune={"from": "base", "target": {"macs": 0.6}})
    outcome = run_study(parse_study_config(data, "t.yaml"), storage=url, jobs=2,
                        options=WorkerOptions(device="cpu", poll=0.1))
    assert outcome.states == {"COMPLETE": 4}
    trials = load_results("t", url).trials
    assert {t.record.compression["distill"]["teacher_weights"] for t in trials} == {
        load_teacher(DistillConfig(str(teacher))).checksum}
    assert all(t.record.macs <= 0.6 * t.record.compression["prune"]["before"]["macs"]
               for t in trials)
    sources = tmp_path / "s-weights" / "sources"
    assert [p.name.startswith("source-") for p in sources.iterdir()] == [True]


@pytest.mark.parametrize(("prune", "message"), [
    ({"target": {"macs": 0.001}}, r"^t\.yaml: prune: layers\[0,2\]\.block=conv: target "
                                  r"\{macs: 0\.001\}: cannot be met without removing a whole "
                                  r"layer"),
    ({"target": {"params": 10**9}}, r"^t\.yaml: prune: layers\[0,2\]\.block=conv: target "
                                    r"\{params: 1,000,000,000\}: the model has .* params "
                                    r"already"),
    ({"target": {"macs": "nope"}}, r"^t\.yaml: prune\.target\.macs: .*nope"),
    ({"target": {"macs": 0.5}, "when": {"layers[0,2].block": "grouped"}},
     r"^t\.yaml: prune\.when: selects none of the study's configurations"),
])
def test_a_pruning_target_that_cannot_be_met_stops_before_training(
        images: Path, tmp_path: Path, prune: dict[str, Any], message: str) -> None:
    with pytest.raises(DwsearchError, match=message):
        run(study_dict(images, train=RECIPE, prune=prune), f"sqlite:///{tmp_path / 'n.db'}")
    assert not (tmp_path / "n.db").exists()


def test_a_configuration_that_cannot_be_pruned_fails_its_trial_with_the_reason(
        images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The narrow first layer has fewer MACs than the count already; the wide one can be
    # pruned to it. With no model tried before training (as for those beyond the first
    # CHECKED_MODELS), the narrow one fails its trial and the study goes on.
    from dwsearch.study import compression

    monkeypatch.setattr(compression, "CHECKED_MODELS", 0)
    outcome = run(study_dict(images, train=RECIPE, space={"layers[0].out_channels": [1, 8]},
                             prune={"target": {"macs": 20_000}}))
    assert outcome.states == {"FAIL": 1, "COMPLETE": 1}
    trials = {t.config["layers[0].out_channels"]: t for t in load_results("t").trials}
    assert trials[1].state == "FAIL"
    assert trials[1].error.startswith("target {macs: 20,000}: the model has 18,"), trials[1].error
    assert trials[8].record.macs <= 20_000


@pytest.mark.slow
def test_qat_where_post_training_int8_loses_too_much(images: Path) -> None:
    pytest.importorskip("executorch")
    outcome = run(study_dict(images, train=RECIPE, space={"layers[0,2].block": ["dwsep"]},
                             qat={"max_drop": 0.0, "force": True, "epochs": 1,
                                  "calibration_images": 16},
                             objectives=["val_accuracy", "qat_int8_val_accuracy",
                                         "ptq_int8_val_accuracy"]))
    assert outcome.states == {"COMPLETE": 1}
    trial = load_results("t").trials[0]
    qat = trial.record.compression["qat"]
    assert qat["ran_qat"] is True and 0 <= qat["qat_accuracy"] <= 1
    assert trial.values == (trial.record.val_accuracy, qat["qat_accuracy"], qat["ptq_accuracy"])
    assert qat["ptq_int8_ms"] > 0 and qat["qat_int8_ms"] > 0
    assert qat["lr"] == pytest.approx(RECIPE["lr"] / 10)


@pytest.mark.parametrize(("changes", "message"), [
    ({"qat": {"max_drop": 2}}, r"^t\.yaml: qat\.max_drop: .*1"),
    ({"qat": {}, "data": {"dataset": "imagefolder", "val_size": 0}, "objectives": ["macs"]},
     r"^t\.yaml: qat: quantization-aware training compares int8 accuracy on the validation"),
    ({"prune": {"from": "base", "target": {"macs": 0.5}}},
     r"^t\.yaml: space\.layers\[0,2\]\.block: prune\.from base prunes the study's base"),
    ({"prune": {"target": {"macs": 0.5}, "when": {"width": 1}}},
     r"^t\.yaml: prune\.when\.width: not a key of space; allowed: layers\[0,2\]\.block$"),
    ({"prune": {"fro": "trial", "target": {"macs": 0.5}}},
     r"^t\.yaml: prune\.fro: unknown key; did you mean 'from'\?"),
    ({"prune": {"target": {"macs": 0.5}, "finetune_epochs": 0}},
     r"^t\.yaml: prune\.finetune_epochs: .*1"),
    ({"prune": {"target": {"flops": 0.5}}}, r"^t\.yaml: prune\.target: expected macs or "
                                            r"params, found 'flops'$"),
    ({"objectives": ["val_accuracy", "qat_int8_val_accuracy"]},
     r"^t\.yaml: objectives\[1\]: qat_int8_val_accuracy is measured by the qat: section, and "
     r"the study has none; add e\.g\. qat: \{max_drop: 0\.01\}$"),
    ({"space": {"train.distill.alpha": [0, 1]}},
     r"^t\.yaml: space\.train\.distill\.alpha: the study has no train\.distill section"),
    ({"train": {"distill": {"teacher": "t.pt", "alpha": 1.5}}},
     r"^t\.yaml: train\.distill\.alpha: "),
])
def test_bad_compression_sections_are_one_located_line(images: Path, changes: dict[str, Any],
                                                       message: str) -> None:
    data = study_dict(images, **changes)
    with pytest.raises(StudyError, match=message):
        from dwsearch.study.plan import make_plan

        make_plan(parse_study_config(data, "t.yaml"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["from", "target", "importance", "finetune_epochs",
                                        "when", "taylor_batches", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6),
                                 st.floats(allow_nan=True), st.text(max_size=8),
                                 st.dictionaries(st.sampled_from(["macs", "params", "flops"]),
                                                 st.one_of(st.floats(), st.text(max_size=5),
                                                           st.integers()), max_size=2)),
                       max_size=4))
def test_any_prune_section_is_accepted_or_one_located_line(section: dict[str, Any]) -> None:
    data = {"name": "t", "base": TINY_BASE, "sampler": "grid", "prune": section}
    try:
        parse_study_config(data, "t.yaml")
    except StudyError as err:
        text = str(err)
        assert "\n" not in text and text.startswith("t.yaml: prune"), text


def test_compress_distill_cost_prints_both_paths_against_no_teacher(
        images: Path, teacher: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from dwsearch.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(TINY_BASE))
    result = CliRunner().invoke(main, [
        "compress", "distill", str(spec), "--teacher", str(teacher), "--cost", "--json",
        "--dataset", "imagefolder", "--data-dir", str(images), "--val-size", "12",
        "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    cost = json.loads(result.output)
    assert cost["epochs"] == 2 and cost["images"] == 72 - 12
    assert all(cost[k] > 0 for k in ("plain", "cached", "augmented", "per_batch"))


@pytest.mark.parametrize("extra", [["--compare"], ["--checkpoint", "x.pt"],
                                   ["--runtime", "executorch"]])
def test_compress_distill_cost_refuses_what_it_would_ignore(teacher: Path, tmp_path: Path,
                                                            extra: list[str]) -> None:
    from click.testing import CliRunner

    from dwsearch.cli import main

    result = CliRunner().invoke(main, ["compress", "distill", "seed_dwsep", "--teacher",
                                       str(teacher), "--cost", *extra])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: --cost measures what the teacher costs and keeps no model; drop --compare, "
        "--checkpoint and --runtime")
    assert not (tmp_path / "x.pt").exists()
