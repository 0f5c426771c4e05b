"""A report of 10,000 trials stays fast: a SYNTHETIC study (tests/synthetic_study.py, nothing
trained) is read from its storage and reported, and the time is printed.

The study is written to Optuna's journal file storage because writing 10,000 trials through
SQLite takes Optuna about a minute; reading is what the report pays for, and
``python tests/synthetic_study.py --storage sqlite:///... --trials 10000`` makes the SQLite
version for timing ``dwsearch report`` by hand (docs/reports.md has the numbers).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import synthetic_study as synthetic

from dwsearch.report import make_report
from dwsearch.study.results import load_results

TRIALS = 10_000
BOUND_SECONDS = 120  # generous for a shared 2-core CPU; measured about 20 s there


@pytest.mark.slow
def test_report_of_ten_thousand_trials(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'large.log'}"
    start = time.perf_counter()
    name = synthetic.large_study(url, n=TRIALS)
    written = time.perf_counter() - start
    start = time.perf_counter()
    results = load_results(name, url)
    loaded = time.perf_counter() - start
    paths = make_report(results, tmp_path / "report")
    total = loaded + paths.seconds
    print(f"\nSYNTHETIC {TRIALS:,}-trial study: written in {written:.1f} s; report: load "
          f"{loaded:.1f} s + frames {paths.timings['frames']:.1f} s + figures "
          f"{paths.timings['figures']:.1f} s + files -> {total:.1f} s in all")
    assert len(results.trials) == TRIALS
    assert total < BOUND_SECONDS
    trials = pd.read_csv(paths.trials_csv, usecols=["trial", "status", "in_stats"])
    assert len(trials) == TRIALS
    assert set(trials["status"]) == {"completed", "pruned", "error"}
    html = paths.html.read_text()
    assert "SYNTHETIC STUDY" in html
    assert "configurations.csv" in html  # the page lists the top rows, the CSV every one
    assert paths.html.stat().st_size < 8 * 2**20
