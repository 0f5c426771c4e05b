"""Reports of synthetic studies (tests/synthetic_study.py: realistic storages, nothing
trained): what counts, the numbers against the records, the files, the self-contained page,
the claims a study states, and that no torch is imported."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import synthetic_study as synthetic
from PIL import Image
from realdata import require_cifar10
from test_layout import SOURCES, imports

from dwsearch.errors import ReportError
from dwsearch.report import ReportPaths, make_report
from dwsearch.report.claims import baseline_claims, judge_claims
from dwsearch.report.frame import StudyFrames, make_frames
from dwsearch.report.stats import paired
from dwsearch.study.results import StudyResults, load_results

REPO = Path(__file__).resolve().parents[1]


class Made:
    def __init__(self, url: str, name: str, out: Path, detail: int) -> None:
        self.url = url
        self.results: StudyResults = load_results(name, url)
        self.frames: StudyFrames = make_frames(self.results)
        self.paths: ReportPaths = make_report(self.results, out, detail=detail)
        self.html = self.paths.html.read_text(encoding="utf-8")
        self.markdown = self.paths.markdown.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    root = tmp_path_factory.mktemp("studies")
    made = {}
    # The search shows 3 front models in detail (default 8): the same sections, fewer figures
    for kind, build, detail in (("baseline", synthetic.baseline_study, 8),
                                ("ablation", synthetic.ablation_study, 8),
                                ("search", synthetic.search_study, 3)):
        url = f"sqlite:///{root / kind}.db"
        name = build(url)
        made[kind] = Made(url, name, root / "reports" / name, detail)
    return made


# -- the synthetic storages are faithful ------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"model": "seed_cnn"}, {"model": "seed_dwsep"},
    synthetic.random_config(__import__("random").Random(3)),  # blocks, kernels, width, FC
])
def test_synthetic_costs_are_the_real_ones(config: dict) -> None:
    from dwsearch.costs import profile

    spec = synthetic.apply_config(synthetic.seed_spec("seed_cnn"), config)
    assert synthetic.layer_rows(spec) == profile(spec).to_rows()


def test_synthetic_record_dict_is_to_dict() -> None:
    record = synthetic.make_record(synthetic.seed_spec("seed_dwsep"), seed=3)
    # Equal as stored (JSON: tuples and lists alike)
    assert json.loads(json.dumps(synthetic.record_dict(record))) == json.loads(record.to_json())


def test_reports_state_the_convention_profiles_state() -> None:
    from dwsearch.convention import convention
    from dwsearch.costs import profile

    tiny = {"input": [3, 8, 8], "num_classes": 2, "layers": [
        {"block": "conv", "out_channels": 4}, {"block": "flatten"},
        {"block": "linear", "out_features": 2}]}
    assert convention("folded") == profile(tiny, bn="folded").convention
    assert convention("counted") == profile(tiny).convention


# -- what counts ------------------------------------------------------------------------------


def test_failed_pruned_and_superseded_trials_stay_out(studies: dict[str, Made]) -> None:
    frames = studies["search"].frames
    trials = frames.trials.set_index("trial")
    reasons = trials["excluded"]
    assert reasons[3] == "pruned after epoch 3"
    assert reasons[5].startswith("diverged: non-finite loss")
    assert reasons[7] == "error: RuntimeError: synthetic worker crash"
    assert reasons[9].startswith("infeasible: macs 612.4M > 600M")
    assert reasons[11] == "superseded: retried as trial 12"
    assert reasons[14] == "same configuration and seed as trial 13 (counted once)"
    assert bool(trials.loc[14, "reused"]) and not bool(trials.loc[13, "reused"])
    assert bool(trials.loc[12, "in_stats"])  # the retry counts
    out = {3, 5, 7, 9, 11, 14}
    assert set(frames.runs["trial"]) == set(range(40)) - out
    # Excluded trials are in no configuration and on no front
    assert frames.configs["n"].sum() == len(frames.runs)
    assert not frames.configs["id"].isin(list(out)).any()
    assert frames.configs["on_front"].any()


def test_configuration_means_and_stds_are_those_of_the_records(studies: dict[str, Made]
                                                                ) -> None:
    made = studies["baseline"]
    for model in ("seed_cnn", "seed_dwsep"):
        records = [t.record for t in made.results.trials if t.config == {"model": model}]
        assert len(records) == 3
        row = made.frames.configs.set_index("baseline").loc[model]
        for column, field in (("val_mean", "val_accuracy"), ("test_mean", "test_accuracy")):
            values = np.array([getattr(r, field) for r in records])
            assert row[column] == pytest.approx(values.mean())
        values = np.array([r.val_accuracy for r in records])
        assert row["val_std"] == pytest.approx(values.std(ddof=1))
        assert row["seeds"] == "0,1,2" and row["n"] == 3
        assert row["params"] == records[0].params


def test_every_metric_of_the_table_has_its_report_columns(studies: dict[str, Made]) -> None:
    """Claims read any metric of the table (test accuracy and training images/s included) from
    the report's frames: each metric's per-run column holds what it reads from the record, and
    its per-configuration column is their mean."""
    from dwsearch.metrics import METRICS

    made = studies["baseline"]
    runs = made.frames.runs.set_index("trial")
    records = {t.number: t.record for t in made.results.trials}
    assert {"test_accuracy", "train_ips"} <= set(METRICS)
    for metric in METRICS.values():
        assert metric.run_column is not None and metric.column is not None, metric.name
        for trial, row in runs.iterrows():
            record = records[int(trial)]
            assert record is not None
            expected, value = metric.read(record), row[metric.run_column]
            if expected is None:  # not measured (deployment: the study had no deploy:)
                assert value is None or pd.isna(value), metric.name
            else:
                assert float(value) == pytest.approx(expected), metric.name
        configs = made.frames.configs.set_index("config_hash")
        means = runs.astype({metric.run_column: float}).groupby("config_hash")[
            metric.run_column].mean()
        for config_hash, mean in means.items():
            shown = float(configs.loc[config_hash, metric.column])
            assert shown == pytest.approx(mean) or (pd.isna(mean) and pd.isna(shown))


def test_ablation_differences_are_paired_on_seeds(studies: dict[str, Made]) -> None:
    made = studies["ablation"]
    by_config: dict[str, dict[int, float]] = {}
    for t in made.results.trials:
        assert t.record is not None
        by_config.setdefault(json.dumps(t.config), {})[t.info.seed] = t.record.val_accuracy
    base = by_config["{}"]
    dwsep = by_config[json.dumps({"layers[0:3].block": "dwsep"})]
    expected = paired([dwsep[s] for s in (0, 1)], [base[s] for s in (0, 1)])
    section = made.html[made.html.index('id="ablation"'):]
    row = re.search(r"<td>layers\[0:3\]\.block</td><td>dwsep</td><td[^>]*>2</td>"
                    r"<td[^>]*>([^<]+)</td>", section)
    assert row is not None
    assert row.group(1) == (f"{expected.mean * 100:+.2f} [{expected.low * 100:+.2f}, "
                            f"{expected.high * 100:+.2f}]")
    # The factor value equal to the base's own is a reused result: exactly no change
    reused = re.search(r"<td>layers\[5\]\.p</td><td>0\.05</td><td[^>]*>2</td>"
                       r"<td[^>]*>([^<]+)</td>.*?<td>reused result</td>", section)
    assert reused is not None and reused.group(1).startswith("+0.00 [+0.00, +0.00]")
    assert (made.paths.folder / "ablation.png").is_file()


def test_ablation_table_lists_each_factor_change(studies: dict[str, Made]) -> None:
    section = studies["ablation"].markdown.split("## Ablation")[1].split("\n## ")[0]
    for factor, values in synthetic.ABLATION_FACTORS.items():
        for value in values:
            assert f"| {factor.replace('|', '')} | {value} |" in section.replace("\\", "")


# -- files ------------------------------------------------------------------------------------

CSV_COLUMNS = ["trial", "status", "seed", "params", "macs", "activations", "latency_ms",
               "train_ips", "val_accuracy", "test_accuracy", "train_seconds", "excluded"]


@pytest.mark.parametrize("kind", ["baseline", "ablation", "search"])
def test_report_files(studies: dict[str, Made], kind: str) -> None:
    made = studies[kind]
    trials = pd.read_csv(made.paths.trials_csv)
    assert len(trials) == len(made.results.trials)
    assert set(CSV_COLUMNS) <= set(trials.columns)
    if kind == "search":
        assert "choice:layers[0:3].kernel_size" in trials.columns
        assert trials.set_index("trial").loc[9, "status"] == "infeasible"
    configs = pd.read_csv(made.paths.configs_csv)
    assert len(configs) == len(made.frames.configs)
    linked = re.findall(r"\]\(([^)]+\.png)\)", made.markdown)
    assert linked and {made.paths.folder / p for p in linked} == set(made.paths.images)
    for path in made.paths.images:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 600


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry of ``folder`` (recursively) with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def _user_files(folder: Path) -> dict[str, bytes]:
    """Files a user put in a folder: names a report could have written among them."""
    files = {"README.md": b"# My notes\n", "trials.csv": b"mine,1\n",
             "pareto_mine.png": b"\x89PNG user figure", "layers_3.png": b"\x89PNG user layers",
             "notes/keep.txt": b"keep me"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def test_a_folder_with_other_files_is_refused(studies: dict[str, Made], tmp_path: Path) -> None:
    _user_files(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ReportError, match=re.escape(
            f"{tmp_path}: not empty and not an earlier report of study 'synthetic-baseline' "
            f"(it holds README.md, layers_3.png, notes, pareto_mine.png and 1 more); a report is "
            f"written into a new or empty folder or over an earlier report of the same study")):
        make_report(studies["baseline"].results, tmp_path)
    assert _snapshot(tmp_path) == before  # every byte, and nothing added


def test_a_report_may_live_beside_its_own_study_file_only(studies: dict[str, Made],
                                                          tmp_path: Path) -> None:
    """reports/NAME/ keeps the study's SQLite file beside its report (so it regenerates from
    a clone): that file does not make the folder foreign, and is never touched; another
    study's file there still does."""
    import shutil

    from dwsearch.study.results import load_results

    made = studies["baseline"]
    db = tmp_path / "study.db"
    shutil.copy(made.url.removeprefix("sqlite:///"), db)
    results = load_results(made.results.name, f"sqlite:///{db}")
    before = db.read_bytes()
    make_report(results, tmp_path)
    make_report(results, tmp_path)  # and over its own earlier report
    assert db.read_bytes() == before and (tmp_path / "index.html").is_file()
    other = tmp_path.parent / f"{tmp_path.name}-other"
    other.mkdir()
    shutil.copy(db, other / "study.db")
    with pytest.raises(ReportError, match=r"not empty and not an earlier report .*study\.db"):
        make_report(studies["ablation"].results, other)


def test_a_report_of_another_study_is_not_replaced(studies: dict[str, Made],
                                                   tmp_path: Path) -> None:
    # With a manifest: the baseline's report folder
    folder = studies["baseline"].paths.folder
    before = _snapshot(folder)
    with pytest.raises(ReportError, match=r"holds the report of study 'synthetic-baseline' "
                                          r"\(dwsearch-report.json\), not of 'synthetic-ablation'"):
        make_report(studies["ablation"].results, folder)
    assert _snapshot(folder) == before
    # Without one (a report made before manifests): its README and page name another study
    (tmp_path / "README.md").write_text(studies["baseline"].markdown)
    (tmp_path / "index.html").write_text(studies["baseline"].html)
    (tmp_path / "diagram_0.png").write_bytes(b"old")
    before = _snapshot(tmp_path)
    with pytest.raises(ReportError, match="not an earlier report of study 'synthetic-ablation'"):
        make_report(studies["ablation"].results, tmp_path)
    assert _snapshot(tmp_path) == before
    # A manifest that is not one
    (tmp_path / "dwsearch-report.json").write_text('{"files": ["../../x"]}')
    with pytest.raises(ReportError, match=r"dwsearch-report.json: not a dwsearch report manifest"):
        make_report(studies["ablation"].results, tmp_path)


def test_regenerating_removes_only_its_own_stale_figures(studies: dict[str, Made],
                                                          tmp_path: Path) -> None:
    results = studies["search"].results
    first = make_report(results, tmp_path, detail=1)
    manifest = json.loads((tmp_path / "dwsearch-report.json").read_text())
    assert manifest["study"] == "synthetic-search" and manifest["storage"] == results.storage
    assert set(manifest["files"]) == {p.name for p in (
        *first.images, first.html, first.markdown, first.trials_csv, first.configs_csv)}
    # The user's files beside the report, one of them named like a report figure
    mine = {"mine.png": b"a user's figure", "diagram_999.png": b"not the report's",
            "notes.txt": b"keep"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    second = make_report(results, tmp_path, detail=0)  # fewer models shown: fewer figures
    stale = {p.name for p in first.images} - {p.name for p in second.images}
    assert stale and {p.name for p in second.removed} == stale
    assert not any((tmp_path / name).exists() for name in stale)
    assert all((tmp_path / name).read_bytes() == data for name, data in mine.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {*mine, "dwsearch-report.json", *json.loads(
            (tmp_path / "dwsearch-report.json").read_text())["files"]})
    # A user's file where the next report would write a figure: refused, nothing written
    clash = tmp_path / sorted(stale)[0]
    clash.write_bytes(b"the user's now")
    before = _snapshot(tmp_path)
    with pytest.raises(ReportError, match=re.escape(
            f"{clash}: exists and is not a file of an earlier report of this study")):
        make_report(results, tmp_path, detail=1)
    assert _snapshot(tmp_path) == before


# -- the page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["baseline", "ablation", "search"])
def test_page_is_self_contained(studies: dict[str, Made], kind: str) -> None:
    html = studies[kind].html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", html)
    assert not re.search(r"url\(", html)
    sources = re.findall(r"<img src=\"([^\"]+)\"", html)
    assert len(sources) == len(studies[kind].paths.images)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.verify()
    assert all(h.startswith("#") for h in re.findall(r"href=\"([^\"]+)\"", html))


def test_page_says_what_it_must(studies: dict[str, Made]) -> None:
    html = studies["baseline"].html
    for section in ("summary", "setup", "fronts", "configurations", "curves", "costs", "speed",
                    "claims", "architectures", "excluded"):
        assert f'id="{section}"' in html, section
    for text in ("SYNTHETIC STUDY", "Lossy JPEG copy", "1 multiply-add = 1 MAC",
                 "batch norm 1 MAC per element (counted)", "torch 2.14.1", synthetic.DEVICE_NAME,
                 "never steered the search", "Regenerate this report", "Pareto front",
                 "Paired differences against seed_cnn (base)", "images/s", "latency ms",
                 "saved for backward", "2026-11-25"):
        assert text in html, text
    for figure in ("pareto_params", "pareto_macs", "pareto_latency", "learning_curves",
                   "speed", "diagram_0", "diagram_3", "layers_0", "layers_3"):
        assert f'id="fig-{figure}"' in html, figure
    assert 'id="ablation"' not in html and 'id="ablation"' in studies["ablation"].html
    assert 'id="claims"' not in studies["search"].html


def test_excluded_trials_are_listed_with_reasons(studies: dict[str, Made]) -> None:
    section = studies["search"].markdown.split("## Trials not in the statistics")[1]
    for reason in ("pruned after epoch 3", "synthetic worker crash", "superseded: retried as "
                   "trial 12", "infeasible: macs 612.4M", "counted once"):
        assert reason in section


def test_claims_in_the_baseline_report(studies: dict[str, Made]) -> None:
    section = studies["baseline"].markdown.split("## Claims, measured")[1]
    section = section.split("\n## ")[0]
    assert "~70-75%" in section and "~68-73%" in section and "30-50% faster" in section
    assert "that the study file states (`claims:`)" in section
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines()
            if line.startswith("| ")}
    assert "| not confirmed |" in rows["~8-9x fewer parameters with depthwise separable "
                                       "convolutions"]
    assert "1.02x (18,435,210 / 18,092,395 parameters)" in section
    assert "1.44x (490,345,472 / 339,905,536 MACs" in section
    assert "| not confirmed |" in rows["Depthwise CNN uses less memory"]  # 4.61 vs 3.58 MiB
    assert "1.29x (4.61 / 3.58 MiB)" in rows["Depthwise CNN uses less memory"]
    # The models the claims name, with every metric the claims use
    assert rows["seed_cnn"].startswith("| seed_cnn | 3 | ") and "| 3.58 MiB |" in rows["seed_cnn"]
    assert "| 18,092,395 |" in rows["seed_dwsep"] and "| 4.61 MiB |" in rows["seed_dwsep"]


# What the report showed for the committed study before claims moved into study files: the
# same claims and verdicts, from the built-in baseline claims (the study stores none).
BASELINE_CPU5K_VERDICTS = {
    "Standard CNN test accuracy ~70-75% after 10 epochs": "not measured",  # 5,000 images
    "Depthwise CNN test accuracy ~68-73% after 10 epochs": "not measured",
    "Standard CNN has ~10-15M parameters": "not confirmed",
    "Depthwise CNN has ~1-2M parameters": "not confirmed",
    "~8-9x fewer parameters with depthwise separable convolutions": "not confirmed",
    "~8-9x fewer FLOPs with depthwise separable convolutions": "not confirmed",
    "Comparable or slightly lower accuracy (1-3% trade-off)": "not measured",
    "Depthwise CNN trains 30-50% faster": "not confirmed",  # 1.23x-1.27x per seed
    "Depthwise CNN has faster inference": "not shown",  # 0.83x-2.38x per seed
    "Depthwise CNN uses less memory": "not confirmed",
    # Begun without a deploy: section: nothing measured where the models ship.
    **{f"Depthwise CNN has faster inference ({where})": "not measured" for where in (
        "ExecuTorch XNNPACK, fp32", "ExecuTorch XNNPACK, int8", "ONNX Runtime, fp32",
        "ONNX Runtime, int8")},
}


def test_a_baseline_study_begun_before_claims_gets_the_built_in_ones(tmp_path: Path) -> None:
    """reports/baseline-cpu5k/study.db was begun before study files had a claims section: its
    report checks the baseline's built-in claims and says so."""
    import shutil

    shutil.copy(REPO / "reports" / "baseline-cpu5k" / "study.db", tmp_path / "study.db")
    results = load_results("baseline-cpu5k", f"sqlite:///{tmp_path / 'study.db'}")
    assert "claims" not in results.config
    paths = make_report(results, tmp_path / "report")
    section = paths.markdown.read_text().split("## Claims, measured")[1].split("\n## ")[0]
    assert "begun before study files had a `claims:` section" in section
    verdicts = {line.split(" | ")[0].strip("| "): line.split(" | ")[3]
                for line in section.splitlines() if line.startswith("| ") and
                line.count(" | ") == 4}
    del verdicts["claim"]
    assert verdicts == BASELINE_CPU5K_VERDICTS


def test_the_claims_a_stored_study_gets(studies: dict[str, Made]) -> None:
    """The stored claims section; none when the study stated none (even one that ran both
    baseline models); the built-in baseline claims only for a baseline study begun before
    study files had the section; none for any other study of that time."""
    from dwsearch.report.claims import study_claims

    configs = studies["baseline"].frames.configs
    stored = studies["baseline"].results.config
    claims, built_in = study_claims(stored, configs, "stored")
    assert claims == baseline_claims() and not built_in
    assert study_claims({**stored, "claims": None}, configs, "stored") == (None, False)
    old = {k: v for k, v in stored.items() if k != "claims"}
    assert study_claims(old, configs, "stored") == (baseline_claims(), True)
    search = studies["search"].frames.configs
    assert study_claims(old, search, "stored") == (None, False)


def test_unreadable_stored_claims_are_a_note_not_a_failed_report(studies: dict[str, Made],
                                                                  tmp_path: Path) -> None:
    made = studies["baseline"]
    claims = {"items": [{"claim": "x", "value": {"metric": "joules", "of": "seed_cnn",
                                                 "below": 1}}]}
    meta = {**made.results.meta, "config": {**made.results.config, "claims": claims}}
    paths = make_report(replace(made.results, meta=meta), tmp_path, detail=0)
    section = paths.markdown.read_text().split("## Claims, measured")[1].split("\n## ")[0]
    assert ("The claims stored with this study cannot be read: study 'synthetic-baseline' "
            "(stored config): claims.items[0].value.metric: unknown metric 'joules'") in section


def test_the_baseline_study_file_states_the_built_in_claims() -> None:
    import yaml

    from dwsearch.study.config import load_study_config

    stated = load_study_config(REPO / "studies" / "baseline.yaml").claims
    assert stated == baseline_claims() and len(stated.items) == 14
    # Byte for byte the same section (comments included) in the package's copy
    text = (REPO / "studies" / "baseline.yaml").read_text()
    built_in = (REPO / "dwsearch" / "report" / "baseline_claims.yaml").read_text()
    assert text[text.index("\nclaims:\n"):] == built_in[built_in.index("\nclaims:\n"):]
    assert yaml.safe_load(built_in)["claims"] == yaml.safe_load(text)["claims"]


# -- what comes from the study file, the storage or the user ---------------------------------

HOSTILE = ("<script>alert(1)</script><img src=x onerror=alert(2)> a|b `tick` **bold** "
           "[link](javascript:alert(3)) ~~struck~~ $x$ &lt;i&gt; _em_\n# heading\r\n| x | $\\frac{$")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A study whose description, spec names, choices, source path, hosts, device names and
    error messages are HTML, Markdown marks, line breaks and a formula matplotlib cannot
    parse."""
    root = tmp_path_factory.mktemp("hostile")
    base = {**synthetic.seed_spec("seed_cnn"), "name": "net " + HOSTILE}
    dwsep = {**synthetic.seed_spec("seed_dwsep"), "name": "dw " + HOSTILE}
    changes = {"host": "host " + HOSTILE, "device_name": "cpu " + HOSTILE}
    trials = [
        synthetic.Trial({}, base, 0, 0, "base", record_changes=changes),
        synthetic.Trial({"model": "dw"}, dwsep, 0, 0, "grid", record_changes=changes),
        synthetic.Trial({"layers[0].block": "dwsep " + HOSTILE},
                        synthetic.apply_config(base, {"layers[0].block": "dwsep"}), 0, 0, "grid",
                        record_changes=changes),
        synthetic.Trial({"layers[0].block": "x " + HOSTILE}, dwsep, 0, 1, "grid",
                        status="error", error="RuntimeError: " + HOSTILE),
    ]
    url = f"sqlite:///{root / 'hostile.db'}"
    name = synthetic.write_study(
        url, {"name": "hostile", "description": "about " + HOSTILE, "base": "seed_cnn",
              "sampler": "grid", "space": {"model": ["seed_cnn", "dw"]}},
        trials, base_name=base["name"], base_spec=base, baselines=[base, dwsep],
        source=f"studies/{HOSTILE}.yaml")
    return Made(url, name, root / "report", detail=8)


def _active(line: str) -> str:
    """What of a Markdown line GitHub reads as markup: code spans and backslash-escaped
    characters become '·' (CommonMark's rules, one line)."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and not line[i + 1].isalnum() \
                and line[i + 1].isascii() and not line[i + 1].isspace():
            out.append("·")
            i += 2
        elif line[i] == "`":
            run = re.match(r"`+", line[i:])
            assert run is not None
            close = re.compile(rf"(?<!`){run[0]}(?!`)").search(line, i + len(run[0]))
            out.append("·" if close else run[0])
            i = close.end() if close else i + len(run[0])
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def test_markdown_shows_hostile_strings_as_text(hostile: Made) -> None:
    markdown = hostile.markdown
    for piece in ("about ", "net ", "dw ", "dwsep ", "host ", "cpu ", "RuntimeError: "):
        assert f"{piece}\\<script>alert(1)\\</script>\\<img src=x onerror=alert(2)>" in markdown, piece
    assert "a\\|b \\`tick\\` \\*\\*bold\\*\\* [link\\](javascript:alert(3)) \\~\\~struck\\~\\~ \\$x\\$ " \
           "\\&lt;i\\&gt; \\_em\\_ # heading \\| x \\| \\$\\\\frac{\\$" in markdown  # line breaks: spaces
    table: list[int] = []
    for line in markdown.splitlines():
        active = _active(re.sub(r"^<sub>|</sub>$", "", line))
        assert "<" not in active, line  # no HTML
        assert "](" not in active or re.fullmatch(r"!\[[^\[\]]*\]\(\w+\.png\)", active), line
        assert active.count("~") < 2 and active.count("$") < 2, line  # no strikethrough, math
        assert not re.search(r"(?<![*])\*(?![*\s])[^*]*(?<![\s*])\*(?![*])", active.strip("*")), line
        assert not re.search(r"(^|\W)_\w", active), line  # no emphasis
        assert not line.startswith(("# heading", "| x |")), line
        if line.startswith("|"):  # a table row: as many cells as its header
            table.append(active.count("|"))
            assert table[-1] == table[0], line
        else:
            table = []
    # Numbers and the report's own marks are as they were
    assert re.search(r"Best configuration by mean validation accuracy: \*\*.+\*\*, validation "
                     r"\d+\.\d\d%, test \d+\.\d\d% over 1 seed\(s\), \d+\.\d\d M parameters, "
                     r"\d+\.\d\d M MACs\.", markdown)
    assert re.search(r"\n\| 0 \| net .+ \(base\) \| 1 \| \d+\.\d\d% \| \d+\.\d\d% \| "
                     r"\d+\.\d\d M \| \d+\.\d\d M \| \d+\.\d\d \| \d+\.\d+ \| 0 \|", markdown)


def test_page_shows_hostile_strings_as_text(hostile: Made) -> None:
    page = hostile.html
    assert "<script" not in page.lower() and "onerror=alert(2)>" not in page
    assert re.findall(r"<img [^>]*>", page) == re.findall(r'<img src="data:image/png;base64,'
                                                          r'[^"]+" alt="[^"<>]*">', page)
    assert "about &lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<strong>bold</strong>" not in page and "**bold**" in page


def test_no_password_reaches_a_report_file(studies: dict[str, Made], tmp_path: Path) -> None:
    """A storage URL with a password, in either form, as the storage, inside the stored study
    file and inside an error message: masked in every file the report writes."""
    made = studies["search"]
    url = "postgresql://dw:hunter2@db.example:5432/studies?sslmode=require&password=hunter2"
    meta = {**made.results.meta, "config": {**made.results.config, "storage": url}}
    trials = tuple(replace(t, error=f"StudyError: storage {url}: cannot open")
                   if t.error else t for t in made.results.trials)
    results = replace(made.results, storage=url, meta=meta, trials=trials)
    paths = make_report(results, tmp_path, detail=1)
    masked = "postgresql://dw:***@db.example:5432/studies?sslmode=require&password=***"
    assert f"stored in `{masked}`" in paths.markdown.read_text()
    assert f"--storage '{masked}'" in paths.markdown.read_text()
    assert masked in paths.trials_csv.read_text()
    assert json.loads((tmp_path / "dwsearch-report.json").read_text())["storage"] == masked
    for path in tmp_path.rglob("*"):
        assert b"hunter2" not in path.read_bytes(), path


# -- claims: the rules, on hand-made numbers --------------------------------------------------


def _pair(**changes: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    cnn = {"config_hash": "c", "baseline": "seed_cnn", "n": 3, "params": 18_435_210,
           "macs": 490_345_472, "saved_bytes": 3_758_592, "test_mean": 0.7041,
           "test_std": 0.004, "train_ips": 100.0, "train_seconds": 4500.0, "latency_ms": 4.0}
    dw = {"config_hash": "d", "baseline": "seed_dwsep", "n": 3, "params": 18_092_395,
          "macs": 339_905_536, "saved_bytes": 4_831_744, "test_mean": 0.69,
          "test_std": 0.005, "train_ips": 125.0, "train_seconds": 3600.0, "latency_ms": 3.0}
    cnn.update(changes.get("cnn", {}))
    dw.update(changes.get("dw", {}))
    per_seed: dict[str, dict[str, list[float]]] = changes.get("per_seed", {})
    rows = []
    for h, row in (("c", cnn), ("d", dw)):
        for s, d in ((0, -0.001), (1, 0.0), (2, 0.001)):
            run = {"config_hash": h, "seed": s, "test_accuracy": row["test_mean"] + d,
                   "latency_ms": row["latency_ms"], "train_ips": row["train_ips"]}
            run.update({k: v[s] for k, v in per_seed.get(h, {}).items()})
            rows.append(run)
    return pd.DataFrame([cnn, dw]), pd.DataFrame(rows)


def _judged(configs: pd.DataFrame, runs: pd.DataFrame, epochs: int = 10,
            train_images: int = 45_000) -> dict[str, Any]:
    result = judge_claims(baseline_claims(), configs, runs, epochs=epochs,
                          train_images=train_images, device="cpu")
    return {v.claim: v for v in result.verdicts}


def _verdicts(configs: pd.DataFrame, runs: pd.DataFrame, epochs: int = 10,
              train_images: int = 45_000) -> dict[str, str]:
    return {claim: v.verdict for claim, v in _judged(configs, runs, epochs,
                                                      train_images).items()}


def test_claim_rules() -> None:
    verdicts = _verdicts(*_pair())
    assert verdicts == {
        "Standard CNN test accuracy ~70-75% after 10 epochs": "confirmed",
        "Depthwise CNN test accuracy ~68-73% after 10 epochs": "confirmed",
        "Standard CNN has ~10-15M parameters": "not confirmed",
        "Depthwise CNN has ~1-2M parameters": "not confirmed",
        "~8-9x fewer parameters with depthwise separable convolutions": "not confirmed",
        "~8-9x fewer FLOPs with depthwise separable convolutions": "not confirmed",
        "Comparable or slightly lower accuracy (1-3% trade-off)": "confirmed",  # -1.41 points
        "Depthwise CNN trains 30-50% faster": "not confirmed",  # 1.25x
        "Depthwise CNN has faster inference": "confirmed",
        "Depthwise CNN uses less memory": "not confirmed",
        **{f"Depthwise CNN has faster inference ({where})": "not measured" for where in (
            "ExecuTorch XNNPACK, fp32", "ExecuTorch XNNPACK, int8", "ONNX Runtime, fp32",
            "ONNX Runtime, int8")},
    }
    # The baseline document's own numbers would confirm it
    verdicts = _verdicts(*_pair(cnn={"params": 12e6, "macs": 9e8}, dw={
        "params": 1.5e6, "macs": 1e8, "train_ips": 140.0, "saved_bytes": 1_000_000}))
    assert verdicts["~8-9x fewer parameters with depthwise separable convolutions"] == "confirmed"
    assert verdicts["~8-9x fewer FLOPs with depthwise separable convolutions"] == "confirmed"
    assert verdicts["Standard CNN has ~10-15M parameters"] == "confirmed"
    assert verdicts["Depthwise CNN has ~1-2M parameters"] == "confirmed"
    assert verdicts["Depthwise CNN trains 30-50% faster"] == "confirmed"
    assert verdicts["Depthwise CNN uses less memory"] == "confirmed"
    # A bigger accuracy drop, no latency, and a short recipe
    verdicts = _verdicts(*_pair(dw={"test_mean": 0.66, "latency_ms": math.nan}))
    assert verdicts["Comparable or slightly lower accuracy (1-3% trade-off)"] == "not confirmed"
    assert verdicts["Depthwise CNN test accuracy ~68-73% after 10 epochs"] == "not confirmed"
    assert verdicts["Depthwise CNN has faster inference"] == "not measured"
    verdicts = _verdicts(*_pair(), epochs=2)
    assert verdicts["Standard CNN test accuracy ~70-75% after 10 epochs"] == "not measured"
    assert verdicts["Comparable or slightly lower accuracy (1-3% trade-off)"] == "not measured"
    assert verdicts["Standard CNN has ~10-15M parameters"] == "not confirmed"  # costs still hold
    judged = _judged(*_pair(), train_images=5_000)
    claim = judged["Depthwise CNN test accuracy ~68-73% after 10 epochs"]
    assert claim.verdict == "not measured"
    assert claim.measured.endswith("(trained on 5,000 images; the claim is for 45,000)")
    # A model that did not run: the claims naming it are not measured, the others are judged
    configs, runs = _pair()
    verdicts = _verdicts(configs.iloc[:1], runs)
    assert verdicts["Standard CNN has ~10-15M parameters"] == "not confirmed"
    assert verdicts["Depthwise CNN has ~1-2M parameters"] == "not measured"
    assert verdicts["Depthwise CNN has faster inference"] == "not measured"
    assert _judged(configs.iloc[:1], runs)["Depthwise CNN uses less memory"].measured == (
        "seed_dwsep did not run in this study")


def test_speed_claims_are_judged_seed_by_seed() -> None:
    """The shipped baseline report confirmed "faster inference" at 1.38x on the means, which
    rested on one seed_cnn latency of 18.02 ms where its other seeds gave about 9; per seed
    seed_dwsep was slower on one of three. Seeds that disagree show nothing."""
    noisy = _pair(cnn={"latency_ms": 12.04}, dw={"latency_ms": 8.7}, per_seed={
        "c": {"latency_ms": [9.0, 18.02, 9.1]}, "d": {"latency_ms": [7.6, 8.9, 9.6]}})
    claim = _judged(*noisy)["Depthwise CNN has faster inference"]
    assert claim.verdict == "not shown"
    assert "1.18x" in claim.measured and "0.95x-2.02x" in claim.measured  # median, spread
    agreeing = _pair(per_seed={"c": {"train_ips": [100.0, 98.0, 103.0]},
                               "d": {"train_ips": [140.0, 139.0, 150.0]}})
    assert _verdicts(*agreeing)["Depthwise CNN trains 30-50% faster"] == "confirmed"
    slower = _pair(per_seed={"c": {"latency_ms": [3.0, 3.1, 2.9]},
                             "d": {"latency_ms": [3.5, 3.6, 3.4]}})
    assert _verdicts(*slower)["Depthwise CNN has faster inference"] == "not confirmed"


def test_claims_of_any_study_on_other_metrics_and_bounds() -> None:
    """The rules are generic: any metric of the table, any bound, any two models by name."""
    from dwsearch.study.config import parse_claims

    claims = parse_claims({"recipe": {"epochs": 10}, "items": [
        {"claim": "fast enough", "value": {"metric": "latency", "of": "seed_dwsep",
                                           "below": 3.5}},
        {"claim": "lean", "difference": {"metric": "saved_bytes", "of": "seed_dwsep",
                                         "minus": "seed_cnn", "at_most": "1M"}},
        {"claim": "cheaper", "ratio": {"metric": "macs", "of": "seed_dwsep", "to": "seed_cnn",
                                       "at_most": 0.75}},
        {"claim": "slower to train", "speed": {"metric": "train_ips", "of": "seed_cnn",
                                               "over": "seed_dwsep", "below": 1}},
        {"claim": "as accurate", "value": {"metric": "val_accuracy", "of": "seed_cnn",
                                           "at_least": "50%"}},
        {"claim": "elsewhere", "value": {"metric": "params", "of": "mobile", "at_most": "2M"}},
    ]})
    assert claims is not None
    configs, runs = _pair()
    configs["val_mean"] = [0.55, 0.56]
    runs["val_accuracy"] = [0.55] * 3 + [0.56] * 3
    runs["saved_bytes"] = [3_758_592] * 3 + [4_831_744] * 3
    result = judge_claims(claims, configs, runs, epochs=2, train_images=5_000, device="cpu")
    judged = {v.claim: v for v in result.verdicts}
    assert judged["fast enough"].verdict == "confirmed"  # 3.0 ms
    assert judged["fast enough"].rule == ("confirmed when the latency of seed_dwsep (mean over "
                                          "seeds) is below 3.5 ms")
    lean = judged["lean"]  # +1.02 MiB per image, paired over 3 seeds
    assert lean.verdict == "not confirmed" and lean.measured.startswith("+1.02 MiB (paired over 3")
    assert lean.rule == ("confirmed when the difference of bytes saved for backward per image, "
                         "seed_dwsep - seed_cnn (mean; paired on shared seeds when there are), "
                         "is at most +1M bytes")
    assert judged["cheaper"].verdict == "confirmed"  # 0.69x
    assert judged["cheaper"].measured == "0.69x (339,905,536 / 490,345,472 MACs)"
    assert judged["slower to train"].verdict == "confirmed"  # 0.8x as fast on every seed
    assert judged["slower to train"].measured.startswith("0.80x as fast as seed_dwsep")
    # An accuracy claim of a study trained 2 epochs where the claims are for 10
    assert judged["as accurate"].verdict == "not measured"
    assert judged["as accurate"].measured.endswith("(trained 2 epochs; the claim is for 10)")
    assert judged["elsewhere"].measured == "mobile did not run in this study"
    models = result.models.set_index("model")
    assert list(models.index) == ["seed_dwsep", "seed_cnn", "mobile"]
    assert models.loc["mobile", "parameters"] == "did not run"
    assert models.loc["seed_cnn", "validation accuracy"] == "55.00 ± 0.00%"


# -- robustness -------------------------------------------------------------------------------


def test_study_without_completed_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    base = synthetic.seed_spec("seed_cnn")
    trials = [synthetic.Trial({}, base, 0, 0, "base", status="error",
                              error="RuntimeError: out of memory"),
              synthetic.Trial({}, base, 1, 1, "base", status="pruned", stop_after=1)]
    name = synthetic.write_study(url, {"name": "nothing-done", "base": "seed_cnn",
                                       "sampler": "grid", "repeats": 2}, trials,
                                 base_name="seed_cnn", base_spec=base, baselines=[base])
    paths = make_report(load_results(name, url), tmp_path / "out")
    html = paths.html.read_text()
    assert "No trial has completed yet" in html and "out of memory" in html
    assert pd.read_csv(paths.trials_csv).shape[0] == 2


def test_unwritable_folder_is_a_report_error(studies: dict[str, Made], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReportError, match="cannot create the report folder"):
        make_report(studies["baseline"].results, blocker / "sub")


# -- no torch ---------------------------------------------------------------------------------


def test_report_never_imports_torch(studies: dict[str, Made], tmp_path: Path) -> None:
    made = studies["baseline"]
    code = (
        "import sys\n"
        "from dwsearch.cli import main\n"
        f"main(['report', {made.results.name!r}, '--storage', {made.url!r}, '--out', "
        f"{str(tmp_path / 'r')!r}], standalone_mode=False)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'fvcore') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert (tmp_path / "r" / "index.html").is_file()


def test_report_modules_import_no_model_code() -> None:
    banned = ("torch", "torchvision", "fvcore", "dwsearch.builder", "dwsearch.costs",
              "dwsearch.run", "dwsearch.blocks", "dwsearch.train")
    for name, path in SOURCES.items():
        if name.startswith("dwsearch.report"):
            bad = [m for m in imports(path) if m.split(".")[0] in banned or any(
                m == b or m.startswith(b + ".") for b in banned)]
            assert not bad, (name, bad)


# -- real runs --------------------------------------------------------------------------------

TINY_CONV = {"name": "tiny_conv", "input": [3, 32, 32], "num_classes": 10, "layers": [
    {"block": "conv", "out_channels": 8}, {"block": "maxpool", "kernel_size": 4},
    {"block": "conv", "out_channels": 16}, {"block": "maxpool", "kernel_size": 4},
    {"block": "flatten"}, {"block": "linear", "out_features": 10}]}
TINY_DWSEP = {**TINY_CONV, "name": "tiny_dwsep", "layers": [
    {"block": "dwsep", "out_channels": 8}, *TINY_CONV["layers"][1:2],
    {"block": "dwsep", "out_channels": 16}, *TINY_CONV["layers"][3:]]}


def test_report_of_real_runs(tmp_path: Path) -> None:
    """Records from dwsearch.run.train_spec on the real CIFAR-10 copy (two tiny models, two
    seeds, 2 epochs on 500 images): everything the runner stores flows into the report."""
    from dwsearch.data.config import DataConfig
    from dwsearch.run import load_data, train_spec
    from dwsearch.train.config import TrainConfig

    data_config = DataConfig(data_dir=str(require_cifar10()), val_size=250,
                             train_subset=500, test_subset=250, seed=0)
    splits = load_data(synthetic.ModelSpec.from_dict(TINY_CONV), data_config)
    trials = []
    for role, spec in (("base", TINY_CONV), ("grid", TINY_DWSEP)):
        for repeat, seed in enumerate((0, 1)):
            record = train_spec(spec, splits, TrainConfig(epochs=2, seed=seed, threads=2),
                                latency=True, data_config=data_config, progress=False)
            trials.append(synthetic.Trial({"model": spec["name"]}, spec, repeat, seed, role,
                                          record=record))
    url = f"sqlite:///{tmp_path / 'real.db'}"
    name = synthetic.write_study(
        url, {"name": "tiny-real", "base": "seed_cnn", "sampler": "grid", "repeats": 2,
              "space": {"model": ["tiny_conv", "tiny_dwsep"]}, "train": {"epochs": 2}},
        trials, base_name="tiny_conv", base_spec=TINY_CONV, baselines=[TINY_CONV, TINY_DWSEP],
        source="tests/test_report.py (real runs, tiny models)")
    results = load_results(name, url)
    paths = make_report(results, tmp_path / "report")
    frames = make_frames(results)
    configs = frames.configs.set_index("baseline")
    assert list(configs.index) == ["tiny_conv", "tiny_dwsep"]
    assert list(configs["n"]) == [2, 2] and bool(configs.loc["tiny_conv", "is_base"])
    html = paths.html.read_text()
    record = trials[0].record
    assert record is not None and record.lossy_data and record.latency is not None
    assert "SYNTHETIC" not in html and "Lossy JPEG copy" in html
    assert record.device_name in html and f"torch {record.versions['torch']}" in html
    assert f"{record.params:,} parameters" in html  # the per-layer table's totals
    assert 'id="fig-pareto_latency"' in html and 'id="fig-learning_curves"' in html
    # Both seeds shared: a paired difference with an interval
    assert re.search(r"<td>tiny_dwsep</td><td class=\"num\">2</td><td[^>]*>[-+]\d+\.\d\d "
                     r"\[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]</td>", html)
    assert 'id="claims"' not in html  # no claims stated, not the baseline's backbones


def test_a_grid_base_given_as_choices_is_named(tmp_path: Path) -> None:
    """A grid whose base is one combination of choices (no ``{}`` configuration): that
    configuration carries the base's name, once."""
    base = synthetic.seed_spec("seed_cnn")
    dwsep = synthetic.apply_config(base, {"layers[0:3].block": "dwsep"})
    trials = [synthetic.Trial({"layers[0:3].block": block}, spec, 0, 0, "grid")
              for block, spec in (("dwsep", dwsep), ("conv", base))]
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    name = synthetic.write_study(url, {"name": "grid-base", "base": "seed_cnn",
                                       "sampler": "grid",
                                       "space": {"layers[0:3].block": ["conv", "dwsep"]}},
                                 trials, base_name="seed_cnn", base_spec=base, baselines=[base])
    frames = make_frames(load_results(name, url))
    named = frames.configs.set_index("id")["baseline"]
    assert named.loc[1] == "seed_cnn" and pd.isna(named.loc[0])
    assert frames.reference == frames.configs.set_index("id").loc[1, "config_hash"]


def test_reports_show_no_machine_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Committed reports printed the absolute dataset and storage paths of the machine that
    made them; paths are shown relative to the repository (the current folder) or the home
    folder."""
    from dwsearch.report.sections import shown_paths

    repo, home = tmp_path / "work" / "repo", tmp_path / "home" / "me"
    monkeypatch.setenv("HOME", str(home))
    text = (f"folders at {tmp_path}/work/shared/cifar10-jpeg (JPEG); "
            f"sqlite:///{repo}/reports/study.db; {home}/.local/share/s.db; /etc/x")
    assert shown_paths(text, cwd=repo) == (
        "folders at ../shared/cifar10-jpeg (JPEG); sqlite:///reports/study.db; "
        "~/.local/share/s.db; /etc/x")
