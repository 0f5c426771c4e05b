"""Study reports: the stored run records read with pandas, Pareto fronts, statistics over
seeds, plots and one self-contained HTML page; never torch.

``make_report(load_results(name), "reports/<name>")`` writes ``index.html`` (everything in
one file), ``README.md`` with the PNG figures beside it, ``trials.csv`` (one row per trial)
and ``configurations.csv`` (one row per configuration, over seeds).

Modules: :mod:`~dwsearch.report.frame` (records -> DataFrames), :mod:`~.pareto`,
:mod:`~.stats`, :mod:`~.claims` (the claims a study states), :mod:`~.plots`,
:mod:`~.diagram` (architecture diagrams), :mod:`~.sections` (what the report says),
:mod:`~.render` (Markdown and HTML), :mod:`~.export` (a trial as a spec, checkpoint or
ONNX file: the one module here that imports torch, and only for weights).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dwsearch.arguments import checked
from dwsearch.errors import ReportError, StudyError, reason
from dwsearch.files import write_atomically
from dwsearch.study.results import StudyResults, storage_file
from dwsearch.urls import mask_url

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_DETAIL", "MANIFEST", "ReportPaths", "make_report", "open_study",
           "study_name_and_storage"]

# Front models (besides the baselines) a report shows with learning curves, per-layer costs
# and diagrams, spread along the front.
DEFAULT_DETAIL = 8

# The report folder's list of what the report wrote (and of which study): a later report of
# the same study replaces those files and removes the ones it no longer writes; nothing else
# in the folder is ever touched.
MANIFEST = "dwsearch-report.json"
MANIFEST_FORMAT = 1
# Names a report writes. A manifest naming anything else is not followed (a file listed there
# is removed only if it has one of these names), and in a report folder made before manifests
# existed only files of these names that the old report wrote are replaced or removed.
_FIXED = ("index.html", "README.md", "trials.csv", "configurations.csv")
_OWN_PNG = re.compile(r"^(pareto_\w+|ablation|compression|learning_curves|speed|layers_\d+|"
                      r"diagram_\d+)\.png$")


def _own_name(name: str) -> bool:
    return name in _FIXED or bool(_OWN_PNG.match(name))


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
    manifest: Path | None = None  # the folder's MANIFEST, listing every file above
    removed: tuple[Path, ...] = ()  # files of the earlier report that this one no longer has


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
    return (f"dwsearch report {results.name} --storage '{mask_url(results.storage)}' "
            f"--out {out_dir}")


def _write(path: Path, data: bytes | str) -> None:
    """Write ``path`` atomically: it holds the old content or the new, never a part."""
    try:
        write_atomically(path, data)
    except OSError as err:
        raise ReportError(f"{path}: cannot write the report ({reason(err)})") from err


# -- the report folder ------------------------------------------------------------------------


def _listing(names: Collection[str], limit: int = 4) -> str:
    shown = sorted(names)[:limit]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest as written by :func:`make_report`; :class:`ReportError` when it
    is not one (unreadable, not JSON, a field missing or of the wrong kind)."""
    path = folder / MANIFEST
    why = None
    data: Any = None
    try:
        if path.stat().st_size > 1_000_000:
            why = "over 1 MB"
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        why = reason(err, 80)
    if why is None:
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            why = f"expected an object with format {MANIFEST_FORMAT}"
        elif not isinstance(data.get("study"), str):
            why = "no study name"
        elif not (isinstance(data.get("files"), list)
                  and all(isinstance(f, str) for f in data["files"])):
            why = "no list of files"
    if why is not None:
        raise ReportError(f"{path}: not a dwsearch report manifest ({why}); name another "
                          f"--out, or move this folder's files away")
    return dict(data)


def _old_report_files(folder: Path, study: str, names: Collection[str]) -> set[str] | None:
    """A report folder written before manifests existed: README.md and index.html both
    headed with this study's name, as every report wrote them. Its files are the fixed four
    and the figures the old README.md links (a figure name is only taken when the report could
    have written it); None when the folder is not such a report."""
    if "README.md" not in names or "index.html" not in names:
        return None
    try:
        with open(folder / "README.md", encoding="utf-8", errors="replace") as fh:
            readme = fh.read(2_000_000)
        with open(folder / "index.html", encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    lines = readme.splitlines()
    if (len(lines) < 3 or lines[0] != f"# Study {study}"
            or not lines[2].startswith("dwsearch study report: ")
            or f"<title>Study {html.escape(study)}</title>" not in head):
        return None
    linked = set(re.findall(r"\]\(([^()\s/\\]+\.png)\)", readme))
    return {n for n in names if n in _FIXED or (n in linked and _OWN_PNG.match(n))}


def _earlier_report(folder: Path, study: str, storage: str | None = None) -> set[str]:
    """The files of the earlier report of ``study`` in ``folder`` that a new report may
    replace or remove (none in an empty folder). A folder holding anything but a report of
    this study (and files beside it) is refused: :class:`ReportError`, before anything is
    written. The study's own storage file (``storage``, a SQLite or journal URL) may lie
    there: a report kept with its study (it is never touched)."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as err:
        raise ReportError(f"{folder}: cannot read the report folder ({reason(err)})") from err
    own = storage_file(storage) if storage else None
    if own is not None and own.parent.resolve() == folder.resolve():
        names.discard(own.name)
    if not names:
        return set()
    if MANIFEST in names:
        manifest = _read_manifest(folder)
        if manifest["study"] != study:
            raise ReportError(
                f"{folder}: holds the report of study {manifest['study']!r} ({MANIFEST}), not "
                f"of {study!r}; name another --out, or move that report away first")
        return {f for f in manifest["files"] if f in names and _own_name(f)}
    old = _old_report_files(folder, study, names)
    if old is None:
        raise ReportError(
            f"{folder}: not empty and not an earlier report of study {study!r} (it holds "
            f"{_listing(names)}); a report is written into a new or empty folder or over an "
            f"earlier report of the same study: name another --out, or empty this folder")
    return old


def _write_manifest(folder: Path, results: StudyResults, files: Iterable[str]) -> Path:
    path = folder / MANIFEST
    _write(path, json.dumps({
        "format": MANIFEST_FORMAT,
        "written_by": "dwsearch report",
        "study": results.name,
        "storage": mask_url(results.storage),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(set(files)),
    }, indent=1) + "\n")
    return path


def _masked(frame: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame for a CSV file with every password in a URL masked (error messages can
    quote a storage URL)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if is_numeric_dtype(values) or is_bool_dtype(values):
            continue
        texts = values.map(lambda v: isinstance(v, str) and ("://" in v or "=" in v))
        if texts.any():
            frame.loc[texts, column] = values[texts].map(mask_url)
    return frame


@checked(ReportError)
def make_report(results: StudyResults, out_dir: str | Path, *,
                command: str | None = None, detail: int = DEFAULT_DETAIL) -> ReportPaths:
    """Write the report of ``results`` into ``out_dir`` (created if needed).

    ``out_dir`` must be new, empty, or hold an earlier report of the same study: one with a
    :data:`MANIFEST`, or one written before manifests existed (its README.md and index.html
    headed with the study's name). The report replaces the earlier report's files, removes
    those it no longer writes (figures of models no longer shown) and touches nothing else;
    any other folder, and a file of the user's where the report would write, is a
    :class:`ReportError` before anything is written. Every file is written atomically.

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
    earlier = _earlier_report(folder, results.name, results.storage)
    frames = make_frames(results)
    timings["frames"] = time.perf_counter() - start
    doc = build_document(frames, command=command or default_command(results, folder),
                         detail=detail)
    timings["figures"] = time.perf_counter() - start - timings["frames"]
    paths = ReportPaths(
        folder=folder, html=folder / "index.html", markdown=folder / "README.md",
        trials_csv=folder / "trials.csv", configs_csv=folder / "configurations.csv",
        images=tuple(folder / f"{image.name}.png" for image in doc.images()), seconds=0.0,
        timings=timings, manifest=folder / MANIFEST,
    )
    files = [p.name for p in (*paths.images, paths.trials_csv, paths.configs_csv,
                              paths.markdown, paths.html)]
    # Only new files and the earlier report's own may be written: never a user's file.
    for name in files:
        target = folder / name
        if os.path.lexists(target) and (name not in earlier or target.is_dir()):
            raise ReportError(f"{target}: exists and is not a file of an earlier report "
                              f"of this study; move it away, or name another --out")
    # Listed before they are written: a report stopped half-way is still known as one.
    _write_manifest(folder, results, [*earlier, *files])
    for image, path in zip(doc.images(), paths.images, strict=True):
        _write(path, image.png)
    _write(paths.trials_csv, _masked(frames.trials).to_csv(index=False))
    _write(paths.configs_csv, _masked(frames.configs).to_csv(index=False))
    _write(paths.markdown, render_markdown(doc))
    _write(paths.html, render_html(doc))
    removed = []
    for name in sorted(earlier - set(files)):
        stale = folder / name
        if _own_name(name) and (stale.is_file() or stale.is_symlink()):
            try:
                stale.unlink()
            except OSError as err:
                raise ReportError(f"{stale}: cannot remove this figure of the earlier report "
                                  f"({reason(err)})") from err
            removed.append(stale)
    _write_manifest(folder, results, files)
    timings["total"] = time.perf_counter() - start
    return ReportPaths(**{**paths.__dict__, "seconds": timings["total"],
                          "removed": tuple(removed)})
