"""Study reports: the stored run records read with pandas, Pareto fronts, statistics over
seeds, plots and one self-contained HTML page; never torch.

``make_report(load_results(name), "reports/<name>")`` writes ``index.html`` (everything in
one file), ``README.md`` with the PNG figures beside it, ``trials.csv`` (one row per trial)
and ``configurations.csv`` (one row per configuration, over seeds).

Modules: :mod:`~dwsearch.report.frame` (records -> DataFrames), :mod:`~.pareto`,
:mod:`~.stats`, :mod:`~.claims` (the seed study's claims), :mod:`~.plots`,
:mod:`~.diagram` (architecture diagrams), :mod:`~.sections` (what the report says),
:mod:`~.render` (Markdown and HTML), :mod:`~.export` (a trial as a spec, checkpoint or
ONNX file: the one module here that imports torch, and only for weights).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from dwsearch.arguments import checked
from dwsearch.errors import ReportError, StudyError, reason
from dwsearch.study.results import StudyResults

__all__ = ["DEFAULT_DETAIL", "ReportPaths", "make_report", "open_study",
           "study_name_and_storage"]

# Front models (besides the baselines) a report shows with learning curves, per-layer costs
# and diagrams, spread along the front.
DEFAULT_DETAIL = 8

# Files a report writes; stale ones of these patterns from an earlier report are removed.
_OWN_PNG = re.compile(r"^(pareto_\w+|ablation|learning_curves|speed|layers_\d+|diagram_\d+)"
                      r"\.png$")


@dataclass(frozen=True)
class ReportPaths:
    """What :func:`make_report` wrote."""

    folder: Path
    html: Path
    markdown: Path
    trials_csv: Path
    configs_csv: Path
    images: tuple[Path, ...]
    seconds: float  # wall time to make the report (loading the storage excluded)
    timings: dict[str, float] = field(default_factory=dict)


@checked(ReportError)
def study_name_and_storage(study: str, storage: str | None = None) -> tuple[str, str | None]:
    """The study's name and storage from ``study``: a study file (``*.yaml``: its ``name:``
    and, unless ``storage`` is given, its ``storage:``) or a study name."""
    path = Path(study)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from dwsearch.study.config import load_study_config

        config = load_study_config(path)
        return config.name, storage or config.model.storage
    return study, storage


@checked(ReportError)
def open_study(study: str, storage: str | None = None) -> StudyResults:
    """Every trial of ``study`` (a study file or name) in ``storage`` (default: the study's
    SQLite file in the default study folder). An unknown study is a one-line
    :class:`~dwsearch.errors.StudyError` naming the studies there are."""
    from dwsearch.study.results import list_studies, load_results
    from dwsearch.study.storage import default_study_dir, resolve_storage_url

    name, storage = study_name_and_storage(study, storage)
    url = resolve_storage_url(storage, name)
    if storage is None and url.startswith("sqlite:///") and not Path(url[10:]).is_file():
        folder = default_study_dir()
        known = sorted(s.name for s in list_studies()) if folder.is_dir() else []
        raise StudyError(f"no study named {name!r} in {folder} (studies there: "
                         f"{', '.join(known) or 'none'}); pass --storage URL for another "
                         f"storage, or a study file")
    return load_results(name, storage)


def default_command(results: StudyResults, out_dir: Path) -> str:
    return f"dwsearch report {results.name} --storage '{results.storage}' --out {out_dir}"


def _write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"{path}: cannot write the report ({reason(err)})") from err


@checked(ReportError)
def make_report(results: StudyResults, out_dir: str | Path, *,
                command: str | None = None, detail: int = DEFAULT_DETAIL) -> ReportPaths:
    """Write the report of ``results`` into ``out_dir`` (created if needed).

    ``command`` is the line printed as the way to regenerate the report (default: ``dwsearch
    report NAME --storage URL --out DIR``); ``detail`` is how many front models (besides the
    baselines) get learning curves, per-layer costs and diagrams. Raises
    :class:`ReportError` when the folder cannot be written.
    """
    from dwsearch.report.frame import make_frames
    from dwsearch.report.render import render_html, render_markdown
    from dwsearch.report.sections import build_document

    start = time.perf_counter()
    timings: dict[str, float] = {}
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"{folder}: cannot create the report folder ({reason(err)})") from err
    if not os.access(folder, os.W_OK):
        raise ReportError(f"{folder}: the report folder is not writable")
    frames = make_frames(results)
    timings["frames"] = time.perf_counter() - start
    doc = build_document(frames, command=command or default_command(results, folder),
                         detail=detail)
    timings["figures"] = time.perf_counter() - start - timings["frames"]
    images = []
    for image in doc.images():
        path = folder / f"{image.name}.png"
        _write(path, image.png)
        images.append(path)
    wanted = {p.name for p in images}
    for stale in folder.glob("*.png"):
        if _OWN_PNG.match(stale.name) and stale.name not in wanted:
            stale.unlink(missing_ok=True)
    paths = ReportPaths(
        folder=folder, html=folder / "index.html", markdown=folder / "README.md",
        trials_csv=folder / "trials.csv", configs_csv=folder / "configurations.csv",
        images=tuple(images), seconds=0.0, timings=timings,
    )
    _write(paths.trials_csv, frames.trials.to_csv(index=False))
    _write(paths.configs_csv, frames.configs.to_csv(index=False))
    _write(paths.markdown, render_markdown(doc))
    _write(paths.html, render_html(doc))
    timings["total"] = time.perf_counter() - start
    return ReportPaths(**{**paths.__dict__, "seconds": timings["total"]})
