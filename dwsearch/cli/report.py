"""Commands about results: ``report`` (a study's report, or the list of studies), ``draw``
(an architecture diagram) and ``export`` (a trial as a spec, checkpoint or ONNX file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dwsearch.cli._common import load_spec_with, spec_options
from dwsearch.convention import BN_MODES
from dwsearch.report import DEFAULT_DETAIL
from dwsearch.report.export import SUFFIXES
from dwsearch.train.config import MAX_THREADS
from dwsearch.urls import mask_url

_STORAGE_HELP = ("Optuna storage URL (sqlite:///PATH, postgresql://..., journal:///PATH); "
                 "default: the study's SQLite file in $DWSEARCH_STUDY_DIR or "
                 "~/.local/share/dwsearch/studies.")


@click.command("report")
@click.argument("study", required=False, metavar="[STUDY_FILE_OR_NAME]")
@click.option("--storage", help=_STORAGE_HELP)
@click.option("--out", type=click.Path(path_type=Path),
              help="Folder to write into; default: reports/<study>/.")
@click.option("--detail", type=click.IntRange(min=0), default=DEFAULT_DETAIL, show_default=True,
              help="Front models (besides the baselines) shown with learning curves, "
                   "per-layer costs and diagrams.")
def report(study: str | None, storage: str | None, out: Path | None, detail: int) -> None:
    """Write the report of STUDY (a study file or a study name): index.html (one
    self-contained page), README.md with PNG plots, trials.csv and configurations.csv.

    Without STUDY, list the studies in the default study folder (or in --storage).
    Reads the stored run records only: no model is built and torch is not imported.
    """
    from dwsearch.report import make_report, open_study, study_name_and_storage

    if study is None:
        _list(storage)
        return
    name, _ = study_name_and_storage(study, storage)
    results = open_study(study, storage)
    folder = out if out is not None else Path("reports") / name
    command = f"dwsearch report {study}"
    if storage:
        command += f" --storage '{mask_url(results.storage)}'"
    command += f" --out {folder}"
    if detail != DEFAULT_DETAIL:
        command += f" --detail {detail}"
    paths = make_report(results, folder, command=command, detail=detail)
    states: dict[str, int] = {}
    for trial in results.trials:
        states[trial.state] = states.get(trial.state, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    removed = f"; {len(paths.removed)} old figure(s) removed" if paths.removed else ""
    click.echo(f"{paths.html}  ({len(results.trials):,} trials: {summary or 'none'}; "
               f"{len(paths.images)} figures{removed}; {paths.seconds:.1f} s)")


def _list(storage: str | None) -> None:
    from dwsearch.study.results import list_studies
    from dwsearch.study.storage import default_study_dir

    folder = default_study_dir()
    if storage is None and not folder.is_dir():
        click.echo(f"no studies in {folder} (it does not exist); run a study, or pass "
                   f"--storage URL")
        return
    studies = list_studies(storage)
    if not studies:
        click.echo(f"no studies in {mask_url(storage) if storage else folder}")
        return
    width = max(len(s.name) for s in studies)
    for summary in studies:
        if summary.problem:
            click.echo(f"{summary.name.ljust(width)}  (not read: {summary.problem})  "
                       f"{summary.storage}")
            continue
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.states.items()))
        click.echo(f"{summary.name.ljust(width)}  {summary.trials:>6,} trials"
                   f"{f' ({states})' if states else ''}  {mask_url(summary.storage)}")


@click.command("draw")
@spec_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG or SVG file to write; default: <spec name>.png.")
@click.option("--bn", type=click.Choice(BN_MODES), default=BN_MODES[0],
              show_default=True, help="Batch norm in the MAC count.")
@click.option("--title", help="Title over the diagram; default: the spec's name.")
def draw(spec: str, overrides: dict[str, Any], out: Path | None, bn: str,
         title: str | None) -> None:
    """Draw SPEC (a YAML file or built-in name): its layers top to bottom with block type,
    kernel, channels, output shape, parameters and MACs."""
    from dwsearch.costs import profile
    from dwsearch.errors import ReportError
    from dwsearch.report.diagram import diagram_figure, with_kernels
    from dwsearch.report.plots import png, svg

    model_spec = load_spec_with(spec, overrides)
    path = out if out is not None else Path(f"{model_spec.name or 'model'}.png")
    if path.suffix.lower() not in (".png", ".svg"):
        raise ReportError(f"--out {path}: expected a .png or .svg file")
    costs = profile(model_spec, bn=bn)  # type: ignore[arg-type]
    figure = diagram_figure(
        with_kernels(model_spec.to_dict(), model_spec.canonical().to_dict()), costs.to_rows(),
        title=title or model_spec.name or "model",
        note=f"batch norm {bn} in MACs; saved bytes per sample in fp32; spec hash "
             f"{costs.spec_hash}")
    data = svg(figure) if path.suffix.lower() == ".svg" else png(figure)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        from dwsearch.errors import reason

        raise ReportError(f"{path}: cannot write ({reason(err)})") from err
    click.echo(f"{path}  ({len(model_spec.layers)} layers, {costs.params:,} params, "
               f"{costs.macs:,} MACs)")


@click.command("export")
@click.argument("study", metavar="STUDY_FILE_OR_NAME")
@click.option("--trial", "number", type=int, required=True, help="Trial number.")
@click.option("--format", "fmt", type=click.Choice(list(SUFFIXES)), default="spec",
              show_default=True,
              help="spec: YAML that build_model rebuilds; checkpoint: spec and kept weights "
                   "(dwsearch.run.model_from_checkpoint reads it); onnx, onnx-int8: for ONNX "
                   "Runtime; pte, pte-int8: for ExecuTorch with the XNNPACK delegate. Programs "
                   "are checked against eager PyTorch and timed.")
@click.option("--storage", help=_STORAGE_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write; default: <study>-trial<N> with the format's suffix.")
@click.option("--untrained", is_flag=True,
              help="Programs: export with fresh weights when the trial kept none.")
@click.option("--calibration", type=click.Choice(["train", "random"]), default="train",
              show_default=True,
              help="int8: calibrate on training images of the trial's data (never validation "
                   "or test), or on random images (no data needed; not representative).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="int8: where the trial's data is now, if it moved.")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=1,
              show_default=True, help="Programs: threads to time the program with.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Programs: the batch to export (a .pte program takes only that batch) "
                   "and time.")
def export(study: str, number: int, fmt: str, storage: str | None, out: Path | None,
           untrained: bool, calibration: str, data_dir: Path | None, threads: int,
           batch_size: int) -> None:
    """Write trial N of STUDY as a spec, a checkpoint with its kept weights, or a program
    ready to ship (ONNX Runtime or ExecuTorch, fp32 or int8), with its check and latency."""
    from dwsearch.report import open_study

    if fmt in ("spec", "checkpoint"):
        # Reads the records only: no torch for a spec (the report package never imports it).
        from dwsearch.report.export import export_spec

        results = open_study(study, storage)
        if fmt == "spec":
            path = export_spec(results, number, out)
            click.echo(f"{path}  (trial {number} of {results.name}, {fmt})")
            return
    from dwsearch.export import export_trial

    results = open_study(study, storage)
    done = export_trial(results, number, fmt, out, untrained=untrained, calibration=calibration,
                        data_dir=data_dir, threads=threads, batch_size=batch_size)
    click.echo(f"{done.path}  (trial {number} of {results.name}, {fmt})")
    if done.program is not None:
        click.echo(done.summary())


COMMANDS = [report, draw, export]
