"""The report's Compression section, on a SYNTHETIC study (tests/synthetic_study.py) whose
trials carry the ``compression`` data that distillation, pruning and QAT write into run
records: the per-trial columns, the per-method tables, the details of each method checked
against numbers computed here from the stored records, the plot, and that a study without
compression has no such section."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import synthetic_study as synthetic
from PIL import Image as PILImage
from scipy import stats as scipy_stats

from dwsearch.report import make_report
from dwsearch.report import plots as report_plots
from dwsearch.report.frame import StudyFrames, compression_label, make_frames
from dwsearch.report.render import Image, Section, Table
from dwsearch.report.sections import build_document, display_name
from dwsearch.study.results import StudyResults, load_results

BASE = synthetic.seed_spec("seed_cnn")
DWSEP = synthetic.seed_spec("seed_dwsep")
PRUNED = synthetic.apply_config(BASE, {"width": 0.7})  # what pruning left of seed_cnn
TEACHER = "teacher <b>cnn</b>"  # a name that is markup in both formats: shown as text
# Made-up validation accuracies by seed: the undistilled student, and what the teacher adds.
STUDENT_VAL = {0: 0.690, 1: 0.684, 2: 0.695, 3: 0.688}
DISTILL_GAIN = {0: 0.011, 1: 0.004, 2: 0.009, 3: 0.030}


def _costs(spec: dict[str, Any]) -> dict[str, int]:
    rows = synthetic.layer_rows(spec)
    return {"params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows)}


def _deploy(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """A record's ``deploy``: ExecuTorch fp32 and int8 latencies that follow MACs."""
    macs = _costs(spec)["macs"]
    fp32 = 0.3 + macs / 2e8 + 0.01 * seed
    return {"format": 1, "runtimes": ["executorch"], "precisions": ["fp32", "int8"],
            "conditions": {"batch_size": 1, "threads": 1, "cpu": "synthetic cpu",
                           "versions": {"executorch": "1.0"}, "blocks": 10,
                           "calls_per_block": 5},
            "eager": {"median_ms": 2 * fp32},
            "programs": {"executorch/fp32": {"median_ms": fp32, "size_bytes": 4 * macs // 100},
                         "executorch/int8": {"median_ms": fp32 / 2, "size_bytes": macs // 100,
                                             "val_accuracy": 0.68}}}


def _distill(seed: int, *, logits: str = "cached", alpha: float = 0.9,
             name: str | None = TEACHER) -> dict[str, Any]:
    entry = {"teacher": "/somewhere/teacher.pt", "teacher_name": name,
             "teacher_spec_hash": "t0hash", "teacher_weights": "sha256:abc", "alpha": alpha,
             "temperature": 4.0, "teacher_logits": logits}
    if logits == "cached":
        entry["teacher_seconds"] = 3.0 + seed
    return entry


def _prune(seed: int) -> dict[str, Any]:
    return {"from": {"spec_hash": synthetic.written_hash(BASE), "weights": "sha256:src",
                     "name": "seed_cnn", "file": None},
            "target": "{macs: 0.5}", "metric": "macs", "value": 0.5, "importance": "magnitude",
            "ratio": 0.3, "before": _costs(BASE), "after": _costs(PRUNED), "bn": "counted",
            "finetune_epochs": 3, "val_accuracy_before": 0.71 + 0.002 * seed,
            "val_accuracy_pruned": 0.40 + 0.05 * seed}


def _qat(seed: int) -> dict[str, Any]:
    ran = seed == 0  # QAT runs on seed 0 only: post-training int8 is good enough on seed 1
    return {"from": {"spec_hash": "x"}, "fp32_accuracy": 0.70 + 0.001 * seed,
            "ptq_accuracy": 0.66 + 0.01 * seed, "qat_accuracy": 0.69 if ran else None,
            "max_drop": 0.01, "ran_qat": ran,
            "epochs": [{"epoch": 1}, {"epoch": 2}] if ran else [], "seconds": 12.0}


def _trials(deployed: bool) -> list[synthetic.Trial]:
    def trial(config: dict[str, Any], spec: dict[str, Any], seeds: list[int], role: str,
              compression: Any = None, val: dict[int, float] | None = None
              ) -> list[synthetic.Trial]:
        out = []
        for repeat, seed in enumerate(seeds):
            changes: dict[str, Any] = {}
            comp = compression(seed) if callable(compression) else compression
            if comp is not None:
                changes["compression"] = comp
            if val is not None:  # test accuracy a little below it, by seed
                changes["val_accuracy"] = val[seed]
                changes["test_accuracy"] = val[seed] - 0.002 * (seed % 3)
            if deployed:
                changes["deploy"] = _deploy(spec, seed)
            out.append(synthetic.Trial(config, spec, repeat, seed, role,
                                       name="seed_cnn" if spec is BASE else None,
                                       record_changes=changes))
        return out

    student = {"model": "seed_dwsep"}
    distilled_val = {s: STUDENT_VAL[s] + DISTILL_GAIN[s] for s in STUDENT_VAL}
    return [
        *trial({}, BASE, [0, 1, 2], "base"),
        *trial(student, DWSEP, [0, 1, 2], "grid", val=STUDENT_VAL),
        # Distilled on one more seed than the student ran: seed 3 has no pair.
        *trial({**student, "distill": "cnn"}, DWSEP, [0, 1, 2, 3], "grid",
               lambda s: {"distill": _distill(s)}, val=distilled_val),
        # alpha 0 is plain training: block choice, but it shares one seed only with the
        # distilled configuration, so the student above is the one compared with.
        *trial({**student, "distill": "alpha0"}, DWSEP, [0], "grid",
               lambda s: {"distill": _distill(s, alpha=0.0)}, val={0: 0.5}),
        *trial({**student, "qat": True}, DWSEP, [0, 1], "grid", lambda s: {"qat": _qat(s)},
               val={0: 0.70, 1: 0.69}),
        # Methods in the record in any order: the label's order is fixed.
        *trial({**student, "distill": "cnn", "qat": True}, DWSEP, [0, 1], "grid",
               lambda s: {"qat": _qat(s), "distill": _distill(s, logits="per_batch",
                                                              name=None)},
               val={0: 0.72, 1: 0.70}),
        *trial({"prune": "macs 0.5"}, PRUNED, [0, 1], "grid", lambda s: {"prune": _prune(s)}),
    ]


class Made:
    def __init__(self, root: Path, deployed: bool) -> None:
        name = f"compress-{'deployed' if deployed else 'eager'}"
        self.url = f"sqlite:///{root / name}.db"
        study = {"name": name, "base": "seed_cnn", "sampler": "grid",
                 "space": {"model": ["seed_cnn", "seed_dwsep"]}, "repeats": 3,
                 "description": "SYNTHETIC: compressed and block-choice trials"}
        synthetic.write_study(self.url, study, _trials(deployed), base_name="seed_cnn",
                              base_spec=BASE, baselines=[BASE, DWSEP])
        self.results: StudyResults = load_results(name, self.url)
        self.frames: StudyFrames = make_frames(self.results)
        self.paths = make_report(self.results, root / name)
        self.html = self.paths.html.read_text(encoding="utf-8")
        self.markdown = self.paths.markdown.read_text(encoding="utf-8")
        sections = build_document(self.frames, command="dwsearch report x").sections
        self.section = next(s for s in sections if s.id == "compression")

    def tables(self) -> list[pd.DataFrame]:
        return [b.frame for b in self.section.blocks if isinstance(b, Table)]

    def table_with(self, column: str) -> pd.DataFrame:
        (table,) = [t for t in self.tables() if column in t.columns]
        return table.set_index("configuration")

    def records(self, **config: Any) -> dict[int, Any]:
        """seed -> record of the trials in the statistics with exactly this configuration."""
        return {t.record.seed: t.record for t in self.results.trials
                if dict(t.config) == config and t.record is not None}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return Made(tmp_path_factory.mktemp("compress"), deployed=True)


@pytest.fixture(scope="module")
def eager(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return Made(tmp_path_factory.mktemp("compress-eager"), deployed=False)


STUDENT = {"model": "seed_dwsep"}
DISTILLED = {"model": "seed_dwsep", "distill": "cnn"}
ALPHA0 = {"model": "seed_dwsep", "distill": "alpha0"}
QAT = {"model": "seed_dwsep", "qat": True}
DISTILLED_QAT = {"model": "seed_dwsep", "distill": "cnn", "qat": True}
PRUNE = {"prune": "macs 0.5"}


def _row(frames: StudyFrames, config: dict[str, Any]) -> pd.Series:
    labels = frames.configs["config"].map(json.loads)
    (index,) = [i for i, c in labels.items() if c == config]
    return frames.configs.loc[index]


def _name(frames: StudyFrames, config: dict[str, Any]) -> str:
    """How the report's tables name a configuration (a baseline by its name)."""
    return display_name(_row(frames, config), 200)


def _points(values: list[float]) -> str:
    """The report's "mean [low, high]" in points, computed here with SciPy's t."""
    data = np.array(values) * 100
    half = scipy_stats.t.ppf(0.975, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    mean = data.mean()
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


# -- the frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "label"), [
    (None, "none"),
    ({}, "none"),
    ({"distill": {"alpha": 0.5}}, "distilled"),
    ({"distill": {"alpha": 0}}, "none"),  # alpha 0 is plain training
    ({"qat": {}, "prune": {}}, "pruned+qat"),
    ({"qat": {}, "prune": {}, "distill": {"alpha": 1.0}}, "distilled+pruned+qat"),
])
def test_compression_label(compression: Any, label: str) -> None:
    assert compression_label(compression) == label


def test_each_run_has_its_compression_columns(made: Made) -> None:
    runs = made.frames.runs.set_index("trial")
    expected = {"{}": "none", "STUDENT": "none", "DISTILLED": "distilled", "ALPHA0": "none",
                "QAT": "qat", "DISTILLED_QAT": "distilled+qat", "PRUNE": "pruned"}
    configs = {"{}": {}, "STUDENT": STUDENT, "DISTILLED": DISTILLED, "ALPHA0": ALPHA0,
               "QAT": QAT, "DISTILLED_QAT": DISTILLED_QAT, "PRUNE": PRUNE}
    seen = 0
    for trial in made.results.trials:
        key = next(k for k, c in configs.items() if c == dict(trial.config))
        row = runs.loc[trial.number]
        assert row["compression"] == expected[key], trial.number
        comp = trial.record.compression or {}
        if expected[key].startswith("distilled"):
            assert row["distill_alpha"] == comp["distill"]["alpha"]
            assert row["teacher_logits"] == comp["distill"]["teacher_logits"]
        else:
            assert pd.isna(row["distill_alpha"])  # alpha 0 included: not distilled
        if "qat" in comp:
            assert row["ptq_val_accuracy"] == comp["qat"]["ptq_accuracy"]
            assert row["qat_epochs"] == len(comp["qat"]["epochs"])
            assert (pd.isna(row["qat_val_accuracy"]) if comp["qat"]["qat_accuracy"] is None
                    else row["qat_val_accuracy"] == comp["qat"]["qat_accuracy"])
        if "prune" in comp:
            assert row["macs_before_prune"] == _costs(BASE)["macs"]
            assert row["val_accuracy_pruned"] == comp["prune"]["val_accuracy_pruned"]
            assert row["prune_from"] == "seed_cnn"
        seen += 1
    assert seen == len(runs) == 17


def test_configurations_aggregate_compression_over_seeds(made: Made) -> None:
    frames = made.frames
    pruned = _row(frames, PRUNE)
    records = made.records(**PRUNE)
    assert pruned["compression"] == "pruned" and pruned["n"] == 2
    for column, key in (("val_accuracy_before_prune", "val_accuracy_before"),
                        ("val_accuracy_pruned", "val_accuracy_pruned")):
        assert pruned[column] == pytest.approx(
            np.mean([r.compression["prune"][key] for r in records.values()]))
    qat = _row(frames, QAT)
    assert qat["ran_qat"] == pytest.approx(0.5)  # one seed of two
    assert qat["qat_val_accuracy"] == pytest.approx(0.69)  # the seed without QAT has none
    assert _row(frames, DISTILLED)["teacher_seconds"] == pytest.approx(np.mean([3, 4, 5, 6]))
    assert _row(frames, STUDENT)["compression"] == "none"


# -- the section ------------------------------------------------------------------------------


def test_one_table_per_method_with_deployed_latency(made: Made) -> None:
    frames = made.frames
    titles = [b.text for b in made.section.blocks if getattr(b, "text", "").startswith("**")]
    assert titles[:5] == ["**Block choice (not compressed)**: 3 configuration(s).",
                          "**Distilled**: 1 configuration(s).", "**Pruned**: 1 configuration(s).",
                          "**QAT**: 1 configuration(s).",
                          "**Distilled + QAT**: 1 configuration(s)."]
    tables = made.tables()
    assert [len(t) for t in tables[:5]] == [3, 1, 1, 1, 1]
    for config, table in ((PRUNE, tables[2]), (DISTILLED_QAT, tables[4]), (STUDENT, tables[0])):
        records = made.records(**config)
        row = table.set_index("configuration").loc[_name(frames, config)]
        for precision in ("fp32", "int8"):
            latency = np.mean([r.deploy["programs"][f"executorch/{precision}"]["median_ms"]
                               for r in records.values()])
            assert row[f"executorch {precision} ms"] == f"{latency:.2f}"
        val = np.array([r.val_accuracy for r in records.values()]) * 100
        assert row["validation"] == f"{val.mean():.2f} ± {val.std(ddof=1):.2f}%"
        assert row["MACs"] == f"{records[0].macs / 1e6:,.2f} M"
        assert row["seeds"] == str(len(records))
    assert "eager latency ms" not in tables[0]


def test_distilled_against_the_same_architecture_without_teacher(made: Made) -> None:
    frames = made.frames
    table = made.table_with("without the teacher")
    distilled = made.records(**DISTILLED)
    student = made.records(**STUDENT)
    shared = sorted(set(distilled) & set(student))
    assert shared == [0, 1, 2]  # seed 3 has no undistilled run
    row = table.loc[_name(frames, DISTILLED)]
    assert row["without the teacher"] == _name(frames, STUDENT)  # not the alpha-0 one
    assert row["shared seeds"] == "3"
    assert row["Δ validation, points [95% CI]"] == _points(
        [distilled[s].val_accuracy - student[s].val_accuracy for s in shared])
    assert row["Δ test, points [95% CI]"] == _points(
        [distilled[s].test_accuracy - student[s].test_accuracy for s in shared])
    assert row["Δ validation, points [95% CI]"].startswith("+0.80 [")  # gains 1.1, 0.4, 0.9
    assert (row["teacher"], row["alpha"], row["T"], row["teacher logits"]) == (
        TEACHER, "0.9", "4", "cached")
    # Distilled and quantized: against the quantized model without the teacher; no name
    # stored, so the teacher is its spec hash.
    row = table.loc[_name(frames, DISTILLED_QAT)]
    both, qat = made.records(**DISTILLED_QAT), made.records(**QAT)
    assert row["without the teacher"] == _name(frames, QAT)
    assert row["Δ validation, points [95% CI]"] == _points(
        [both[s].val_accuracy - qat[s].val_accuracy for s in (0, 1)])
    assert (row["teacher"], row["teacher logits"]) == ("t0hash", "per batch")


def test_pruned_against_its_source(made: Made) -> None:
    frames = made.frames
    row = made.table_with("pruned val").loc[_name(frames, PRUNE)]
    records = made.records(**PRUNE)
    before, after = _costs(BASE), _costs(PRUNED)
    assert row["MACs"] == f"{before['macs'] / 1e6:,.2f} M → {after['macs'] / 1e6:,.2f} M"
    assert row["params"] == f"{before['params'] / 1e6:,.2f} M → {after['params'] / 1e6:,.2f} M"
    assert row["source val"] == "71.10%"  # 71.0 and 71.2
    assert row["pruned val"] == "42.50%"  # 40 and 45
    val = np.array([r.val_accuracy for r in records.values()]) * 100
    assert row["fine-tuned val"] == f"{val.mean():.2f} ± {val.std(ddof=1):.2f}%"
    assert (row["source"], row["target"], row["channels cut"], row["fine-tuning epochs"]) == (
        "seed_cnn", "{macs: 0.5}", "30.0%", "3")


def test_qat_accuracies(made: Made) -> None:
    table = made.table_with("int8 after QAT val")
    row = table.loc[_name(made.frames, QAT)]
    assert (row["fp32 val"], row["int8 post-training val"], row["int8 after QAT val"],
            row["QAT ran"], row["allowed drop (points)"]) == (
        "70.05%", "66.50%", "69.00%", "50% of seeds", "1.00")
    assert set(table.index) == {_name(made.frames, QAT), _name(made.frames, DISTILLED_QAT)}


def test_plot_of_accuracy_against_deployed_latency(made: Made) -> None:
    assert 'id="fig-compression"' in made.html
    (path,) = [p for p in made.paths.images if p.name == "compression.png"]
    with PILImage.open(io.BytesIO(path.read_bytes())) as image:
        image.verify()
    (image_block,) = [b for b in made.section.blocks if isinstance(b, Image)]
    assert "ExecuTorch (XNNPACK) fp32 latency (ms)" in image_block.caption
    # The figure's points: one series per method, each configuration's mean over seeds.
    methods = ["none", "distilled", "pruned", "qat", "distilled+qat"]
    figure = report_plots.compression_figure(made.frames.configs, "latency_executorch_fp32",
                                             "latency (ms)", methods)
    (ax,) = figure.axes
    series = {c.get_label(): c.get_offsets() for c in ax.collections if c.get_label()[0] != "_"}
    assert list(series) == ["none (3)", "distilled (1)", "pruned (1)", "qat (1)",
                            "distilled+qat (1)"]
    markers = {tuple(map(tuple, c.get_paths()[0].vertices)) for c in ax.collections
               if c.get_label()[0] != "_"}
    assert len(markers) == 5  # a marker of its own per method
    records = made.records(**PRUNE)
    expected = [np.mean([r.deploy["programs"]["executorch/fp32"]["median_ms"]
                         for r in records.values()]),
                np.mean([r.val_accuracy for r in records.values()])]
    np.testing.assert_allclose(np.asarray(series["pruned (1)"]), [expected])
    assert ax.get_xlabel() == "latency (ms) (lower is better)"
    assert ax.get_ylabel() == "validation accuracy (mean over seeds)"


def test_section_in_both_formats(made: Made) -> None:
    assert "## Compression" in made.markdown
    section = made.markdown.split("## Compression", 1)[1].split("\n## ", 1)[0]
    assert "![" in section and "(compression.png)" in section
    assert "teacher \\<b>cnn\\</b>" in section  # the teacher's name as text
    page = made.html[made.html.index('id="compression"'):]
    assert "teacher &lt;b&gt;cnn&lt;/b&gt;" in page and "<b>cnn</b>" not in page
    # Placed after Deployment, before the architectures
    assert made.html.index('id="deployment"') < made.html.index('id="compression"') \
        < made.html.index('id="architectures"')


def test_without_deployment_latency_is_eager(eager: Made) -> None:
    tables = eager.tables()
    assert "eager latency ms" in tables[0] and not any(
        c.startswith("executorch") for t in tables for c in t.columns)
    row = tables[1].set_index("configuration").loc[_name(eager.frames, DISTILLED)]
    records = eager.records(**DISTILLED)
    assert row["eager latency ms"] == f"{np.mean([r.latency_ms for r in records.values()]):.2f}"
    (image_block,) = [b for b in eager.section.blocks if isinstance(b, Image)]
    assert "eager PyTorch latency (ms)" in image_block.caption
    assert 'id="deployment"' not in eager.html and 'id="compression"' in eager.html


def test_no_section_without_compression(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    name = synthetic.baseline_study(url, repeats=2)
    frames = make_frames(load_results(name, url))
    assert set(frames.runs["compression"]) == {"none"}
    sections: list[Section] = list(build_document(frames, command="x").sections)
    assert "compression" not in [s.id for s in sections]
    assert "compression" in [s.id for s in build_document(_compressed_once(frames),
                                                          command="x").sections]


def _compressed_once(frames: StudyFrames) -> StudyFrames:
    """The same study with one run marked pruned: the section appears (the check above is
    not vacuous)."""
    from dataclasses import replace

    trials = frames.trials.copy()
    trials.loc[trials.index[-1], "compression"] = "pruned"
    configs = frames.configs.copy()
    configs.loc[configs.index[-1], "compression"] = "pruned"
    return replace(frames, trials=trials, configs=configs)


def test_compressed_trials_outside_the_statistics_are_a_note(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    trials = [synthetic.Trial({}, BASE, 0, 0, "base", name="seed_cnn"),
              synthetic.Trial(PRUNE, PRUNED, 0, 0, "grid", status="diverged",
                              error="diverged: non-finite loss at epoch 2",
                              record_changes={"compression": {"prune": _prune(0)}})]
    name = synthetic.write_study(url, {"name": "failed", "base": "seed_cnn", "sampler": "grid",
                                       "space": {"model": ["seed_cnn"]}}, trials,
                                 base_name="seed_cnn", base_spec=BASE, baselines=[BASE])
    frames = make_frames(load_results(name, url))
    assert list(frames.trials["compression"]) == ["none", "pruned"]
    (section,) = [s for s in build_document(frames, command="x").sections
                  if s.id == "compression"]
    assert [getattr(b, "text", None) for b in section.blocks] == [
        "1 trial(s) compressed a model, but none is in the statistics: see the last section "
        "for why."]
