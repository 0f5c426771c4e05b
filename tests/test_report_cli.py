"""``dwsearch report``, ``draw`` and ``export``: what they write, and one-line errors for
every mistake a user can make."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import synthetic_study as synthetic
import torch
from click.testing import CliRunner
from pg import postgres_server
from PIL import Image

from dwsearch.cli import main
from dwsearch.errors import ReportError, RuntimeNotInstalledError
from dwsearch.export import export_trial
from dwsearch.spec import ModelSpec
from dwsearch.study.results import load_results

TINY = {"name": "tiny", "input": [3, 8, 8], "num_classes": 10, "layers": [
    {"block": "conv", "out_channels": 4, "kernel_size": 3},
    {"block": "dwsep", "out_channels": 8, "kernel_size": 3},
    {"block": "maxpool", "kernel_size": 2},
    {"block": "flatten"},
    {"block": "linear", "out_features": 10},
]}


REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default study folder holding the synthetic baseline and search studies, one SQLite
    file per study as the runner writes them."""
    folder = tmp_path_factory.mktemp("study-dir")
    synthetic.baseline_study(f"sqlite:///{folder / 'synthetic-baseline.db'}")
    synthetic.search_study(f"sqlite:///{folder / 'synthetic-search.db'}", n=16)
    return folder


@pytest.fixture()
def default_dir(study_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(study_dir))
    monkeypatch.chdir(tmp_path)
    return study_dir


@pytest.fixture(scope="module")
def weights_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """A study whose trials kept weights: trial 0 as a dwsearch checkpoint, trial 1 as a bare
    state dict under a path relative to the storage's folder, trial 2 none."""
    from dwsearch.builder import build_model
    from dwsearch.train.checkpoint import CHECKPOINT_FORMAT_VERSION, save_checkpoint

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = build_model(TINY)
    full, bare = folder / "t0.pt", folder / "t1.pt"
    save_checkpoint(full, {"format_version": CHECKPOINT_FORMAT_VERSION, "spec": TINY,
                           "model": model.state_dict()})
    torch.save(model.state_dict(), bare)
    trials = [synthetic.Trial({}, TINY, r, r, "base", weights=str(w) if w else None)
              for r, w in enumerate([full, Path(bare.name), None])]
    url = f"sqlite:///{folder / 'weights.db'}"
    name = synthetic.write_study(url, {"name": "kept-weights", "base": "seed_cnn",
                                       "sampler": "grid", "repeats": 3, "keep_weights": True},
                                 trials, base_name="tiny", base_spec=TINY, baselines=[TINY])
    return name, url, folder


# -- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "draw", "export"])
def test_help(command: str) -> None:
    code, out = run(command, "--help")
    assert code == 0 and "Usage:" in out and "--out" in out


# -- report -----------------------------------------------------------------------------------


def test_report_lists_studies_without_an_argument(default_dir: Path) -> None:
    code, out = run("report")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("synthetic-baseline") and "6 trials (6 complete)" in lines[0]
    assert lines[1].startswith("synthetic-search") and "pruned" in lines[1]


def test_report_lists_nothing_in_a_missing_folder(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path / "none"))
    code, out = run("report")
    assert code == 0 and "no studies in" in out and "does not exist" in out


def test_report_by_name_into_the_default_folder(default_dir: Path, tmp_path: Path) -> None:
    code, out = run("report", "synthetic-baseline")
    assert code == 0, out
    folder = tmp_path / "reports" / "synthetic-baseline"
    assert out.startswith(str(Path("reports/synthetic-baseline/index.html")))
    assert "6 trials: 6 complete" in out
    for name in ("index.html", "README.md", "trials.csv", "configurations.csv",
                 "pareto_macs.png", "diagram_0.png"):
        assert (folder / name).is_file(), name
    assert "dwsearch report synthetic-baseline --out reports/synthetic-baseline" in (
        folder / "README.md").read_text()


def test_report_from_a_study_file(default_dir: Path, tmp_path: Path) -> None:
    study = tmp_path / "baseline.yaml"
    study.write_text(
        "name: synthetic-baseline\nbase: seed_cnn\nsampler: grid\nrepeats: 3\n"
        f"storage: sqlite:///{default_dir / 'synthetic-baseline.db'}\n"
        "space:\n  model: [seed_cnn, seed_dwsep]\n")
    code, out = run("report", str(study), "--out", str(tmp_path / "out"))
    assert code == 0, out
    assert (tmp_path / "out" / "index.html").is_file()


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def test_report_refuses_a_folder_of_other_files(default_dir: Path, tmp_path: Path) -> None:
    """The folder users reported: README.md and trials.csv were replaced, pareto_mine.png and
    layers_3.png deleted. Now: one line, exit 1, every byte as it was."""
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("README.md", "trials.csv", "pareto_mine.png", "layers_3.png"):
        (out / name).write_bytes(f"the user's {name}\n".encode())
    before = _snapshot(out)
    code, output = run("report", "synthetic-baseline", "--out", str(out))
    assert code == 1, output
    assert output == (
        f"Error: {out}: not empty and not an earlier report of study 'synthetic-baseline' (it "
        f"holds README.md, layers_3.png, pareto_mine.png, trials.csv); a report is written into "
        f"a new or empty folder or over an earlier report of the same study: name another "
        f"--out, or empty this folder\n")
    assert _snapshot(out) == before


def test_an_old_report_regenerates_keeping_the_users_files(tmp_path: Path) -> None:
    """A committed example report (made before report folders had a manifest), with a user's
    files beside it: regenerated with fewer models in detail, it replaces its own files,
    removes only the figures its old README.md linked and no longer needs, and keeps the
    rest (the study's storage, the user's files, even one named like a report figure)."""
    folder = tmp_path / "hybrid-cpu2k"
    shutil.copytree(REPO / "reports" / "hybrid-cpu2k", folder)
    old_readme = (folder / "README.md").read_text()
    old_figures = set(re.findall(r"\]\((\w+\.png)\)", old_readme))
    mine = {"notes.txt": b"mine", "pareto_mine.png": b"a user's figure",
            "layers_3.png": b"a user's, named like a report figure"}
    for name, data in mine.items():
        (folder / name).write_bytes(data)
    untouched = {n: (folder / n).read_bytes() for n in ("study.db", *mine)}
    code, output = run("report", "hybrid-cpu2k", "--storage",
                       f"sqlite:///{folder / 'study.db'}", "--out", str(folder), "--detail", "1")
    assert code == 0, output
    new_figures = set(re.findall(r"\]\((\w+\.png)\)", (folder / "README.md").read_text()))
    gone = old_figures - new_figures
    assert gone and f"{len(gone)} old figure(s) removed" in output
    assert {p.name for p in folder.iterdir()} == (
        {*untouched, *new_figures, "index.html", "README.md", "trials.csv",
         "configurations.csv", "dwsearch-report.json"})
    assert all((folder / n).read_bytes() == data for n, data in untouched.items())
    manifest = json.loads((folder / "dwsearch-report.json").read_text())
    assert manifest["study"] == "hybrid-cpu2k"
    assert set(manifest["files"]) == {*new_figures, "index.html", "README.md", "trials.csv",
                                      "configurations.csv"}


@pytest.mark.parametrize(("args", "message"), [
    (["report", "nope"], "no study named 'nope' in"),
    (["report", "nope", "--storage", "sqlite:///{dir}/synthetic-search.db"],
     "no study named 'nope'; it holds: synthetic-search"),
    (["report", "x", "--storage", "sqlite:///{dir}/missing.db"], "no such SQLite file"),
    (["report", "x", "--storage", "ftp://host/db"], "unknown kind of storage"),
    (["report", "missing.yaml"], "missing.yaml: no such study file"),
    (["report", "synthetic-baseline", "--out", "{file}/sub"], "cannot create the report folder"),
    (["export", "synthetic-search", "--trial", "99"], "has no trial 99; it holds trials 0..15"),
    (["export", "synthetic-search", "--trial", "7"], "has no run record (status error"),
    (["export", "synthetic-search", "--trial", "1", "--format", "checkpoint"],
     "kept no weights (the study ran with keep_weights: false)"),
    (["export", "synthetic-search", "--trial", "1", "--format", "onnx"], "kept no weights"),
    (["export", "nope", "--trial", "1"], "no study named 'nope'"),
    (["draw", "seed_cnn", "--out", "x.jpg"], "expected a .png or .svg file"),
    (["draw", "seed_cn"], "did you mean seed_cnn"),
])
def test_user_mistakes_are_one_line(default_dir: Path, tmp_path: Path, args: list[str],
                                    message: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = [a.format(dir=default_dir, file=blocker) for a in args]
    code, out = run(*args)
    assert code == 1, out
    assert out.startswith("Error: ") and out.count("\n") == 1, out
    assert message in out


def test_unknown_format_is_a_usage_error(default_dir: Path) -> None:
    code, out = run("export", "synthetic-search", "--trial", "1", "--format", "pickle")
    assert code == 2 and "'pickle' is not one of" in out


# -- draw -------------------------------------------------------------------------------------


def test_draw_png_and_svg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("draw", "seed_dwsep")
    assert code == 0, out
    assert "seed_dwsep.png  (14 layers, 18,092,395 params, 339,905,536 MACs)" in out
    with Image.open(tmp_path / "seed_dwsep.png") as image:
        assert image.format == "PNG" and image.height > 1000  # 14 layers, top to bottom
    (tmp_path / "tiny.yaml").write_text(ModelSpec.from_dict(TINY).to_yaml())
    code, out = run("draw", "tiny.yaml", "--set", "layers[0].block=dwsep", "--out",
                    "d/variant.svg", "--bn", "folded")
    assert code == 0, out
    svg = (tmp_path / "d" / "variant.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_draw_names_kernels_channels_and_costs(tmp_path: Path) -> None:
    from dwsearch.costs import profile
    from dwsearch.report.diagram import diagram_figure, layer_label, with_kernels
    from dwsearch.zoo import get_spec

    spec = get_spec("seed_cnn").with_overrides({"layers[1].block": "dwsep",
                                                "layers[1].bias": None,
                                                "layers[1].kernel_size": None})
    filled = with_kernels(spec.to_dict(), spec.canonical().to_dict())
    assert filled["layers"][1]["kernel_size"] == 3  # the default, named in the diagram
    assert "bias" not in filled["layers"][1]
    assert layer_label("dwsep", filled["layers"][1], (32, 32, 32), (64, 32, 32)) == (
        "dwsep 3×3, 32→64")
    assert layer_label("conv", {"kernel_size": 5, "stride": 2, "bn": False}, (3, 8, 8),
                       (16, 4, 4)) == "conv 5×5 /2, 3→16, no BN"
    assert layer_label("linear", {"activation": "relu"}, (16384,), (1024,)) == (
        "linear 16384→1024 + relu")
    figure = diagram_figure(filled, profile(spec).to_rows())
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert "1  dwsep 3×3, 32→64" in texts and "64×32×32" in texts
    assert "16,778,240" in texts  # FC(16384→1024) params
    with pytest.raises(ReportError, match="14 layers but 2 cost rows"):
        diagram_figure(filled, profile(spec).to_rows()[:2])


# -- export -----------------------------------------------------------------------------------


def test_export_spec_rebuilds_the_architecture(default_dir: Path, tmp_path: Path) -> None:
    from dwsearch.builder import build_model
    from dwsearch.zoo import load_spec

    results = load_results("synthetic-search", f"sqlite:///{default_dir / 'synthetic-search.db'}")
    trial = next(t for t in results.trials if t.number == 13)
    code, out = run("export", "synthetic-search", "--trial", "13")
    assert code == 0, out
    path = tmp_path / "synthetic-search-trial13.yaml"
    assert path.is_file()
    text = path.read_text()
    assert text.startswith("# Exported by dwsearch export from study synthetic-search, trial 13")
    spec = load_spec(path)
    assert trial.record is not None
    assert spec.name == "synthetic-search-trial13"  # a changed configuration, renamed
    assert spec.written_hash() == trial.record.spec_hash
    stored = ModelSpec.from_dict(trial.record.spec)
    assert spec.hash() == stored.hash()
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == trial.record.params
    # The base keeps its name
    code, out = run("export", "synthetic-baseline", "--trial", "0", "--out", "b/base.yaml")
    assert code == 0 and load_spec(tmp_path / "b" / "base.yaml").name == "seed_cnn"


@pytest.mark.parametrize("trial", [0, 1])
def test_export_checkpoint_with_kept_weights(weights_study: tuple[str, str, Path],
                                             tmp_path: Path, trial: int) -> None:
    from dwsearch.run import model_from_checkpoint

    name, url, folder = weights_study
    code, out = run("export", name, "--storage", url, "--trial", str(trial), "--format",
                    "checkpoint", "--out", str(tmp_path / "m.pt"))
    assert code == 0, out
    model = model_from_checkpoint(tmp_path / "m.pt")
    kept = torch.load(folder / f"t{trial}.pt", weights_only=True)
    kept = kept.get("model", kept)
    for key, value in model.state_dict().items():
        assert torch.equal(value, kept[key]), key
    code, out = run("export", name, "--storage", url, "--trial", "2", "--format", "checkpoint")
    assert code == 1 and "kept no weights" in out


def test_an_exported_checkpoint_names_its_storage_without_the_password(
        weights_study: tuple[str, str, Path], tmp_path: Path) -> None:
    name, url, _ = weights_study
    results = replace(load_results(name, url),
                      storage="postgresql://u:hunter2@h/db?password=hunter2")
    export_trial(results, 0, "checkpoint", tmp_path / "m.pt")
    source = torch.load(tmp_path / "m.pt", weights_only=True)["source"]
    assert source["storage"] == "postgresql://u:***@h/db?password=***"


def test_export_checkpoint_refuses_weights_that_do_not_fit(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save({"0.conv.weight": torch.zeros(1)}, wrong)
    missing = tmp_path / "gone.pt"
    trials = [synthetic.Trial({}, TINY, 0, 0, "base", weights=str(wrong)),
              synthetic.Trial({}, TINY, 1, 1, "base", weights=str(missing))]
    url = f"sqlite:///{tmp_path / 's.db'}"
    name = synthetic.write_study(url, {"name": "bad-weights", "base": "seed_cnn",
                                       "sampler": "grid", "repeats": 2}, trials,
                                 base_name="tiny", base_spec=TINY, baselines=[TINY])
    results = load_results(name, url)
    with pytest.raises(ReportError, match="the kept weights do not fit its spec"):
        export_trial(results, 0, "checkpoint", tmp_path / "x.pt")
    with pytest.raises(ReportError, match=r"its weights file .*gone.pt is missing$"):
        export_trial(results, 1, "checkpoint", tmp_path / "x.pt")


def test_export_onnx_runs_like_the_model(weights_study: tuple[str, str, Path],
                                         tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    from dwsearch.run import model_from_checkpoint

    name, url, folder = weights_study
    code, out = run("export", name, "--storage", url, "--trial", "0", "--format", "onnx",
                    "--out", str(tmp_path / "m.onnx"))
    assert code == 0, out
    graph = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(graph)
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)  # batch 3
    (got,) = ReferenceEvaluator(graph).run(None, {"images": x})
    expected = model_from_checkpoint(folder / "t0.pt")(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    code, out = run("export", name, "--storage", url, "--trial", "2", "--format", "onnx")
    assert code == 1 and "kept no weights" in out
    code, out = run("export", name, "--storage", url, "--trial", "2", "--format", "onnx",
                    "--untrained", "--out", str(tmp_path / "fresh.onnx"))
    assert code == 0 and (tmp_path / "fresh.onnx").stat().st_size > 0


def test_export_onnx_without_its_packages_says_what_to_install(
        weights_study: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    import sys

    name, url, _ = weights_study
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(RuntimeNotInstalledError, match=re.escape("pip install 'dwsearch[deploy]'")):
        export_trial(load_results(name, url), 0, "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_report_detail_sets_the_models_drawn(default_dir: Path, tmp_path: Path) -> None:
    code, out = run("report", "synthetic-search", "--detail", "0", "--out", "s")
    assert code == 0, out
    drawn = sorted(p.name for p in (tmp_path / "s").glob("diagram_*.png"))
    assert drawn == ["diagram_0.png"]  # the base only
    assert "--detail 0" in (tmp_path / "s" / "README.md").read_text()
    code, out = run("report", "synthetic-search", "--detail", "-1")
    assert code == 2 and "-1" in out


# -- credentials ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_study() -> Iterator[tuple[str, str]]:
    """The synthetic baseline study in a private PostgreSQL server (trust authentication:
    any password is accepted); yields its URL with the password in each form."""
    with postgres_server() as url:
        userinfo = url.replace("://postgres@", "://postgres:hunter2@")
        query = f"{url}?application_name=dwsearch&password=hunter2"
        synthetic.baseline_study(userinfo)
        yield userinfo, query


def test_no_password_in_report_output_or_files(postgres_study: tuple[str, str],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL password in the storage URL, as user:password@ or as ?password=, given on
    the command line or in the study file: in no file of the report and in nothing printed."""
    userinfo, query = postgres_study
    monkeypatch.chdir(tmp_path)
    Path("baseline.yaml").write_text(
        "name: synthetic-baseline\nbase: seed_cnn\nsampler: grid\nrepeats: 3\n"
        f"storage: {query}\nspace:\n  model: [seed_cnn, seed_dwsep]\n")
    for args, code in [(("synthetic-baseline", "--storage", userinfo, "--out", "a"), 0),
                       (("synthetic-baseline", "--storage", query, "--out", "b"), 0),
                       (("baseline.yaml", "--out", "c"), 0),
                       (("--storage", query), 0),  # the list of studies
                       (("nope", "--storage", query), 1)]:  # an error naming the storage
        result = CliRunner().invoke(main, ["report", *args])
        assert result.exit_code == code, result.output
        assert "hunter2" not in result.output + result.stderr, args
        if args[-1] not in ("a", "b", "c"):
            assert "application_name=dwsearch&password=***" in result.output, result.output
    assert "postgres:***@" in Path("a/index.html").read_text()
    assert "password=***" in Path("b/README.md").read_text()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 30
    for path in written:
        assert b"hunter2" not in path.read_bytes() or path.name == "baseline.yaml", path
