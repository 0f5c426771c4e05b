"""Studies under faults: what several processes, several files and time do to them. Each test
reproduces a way results were lost or corrupted (issue 15) and fails without its fix: storages
that are not study databases, torn journals, resumes that change what is measured, options
that would fail every trial, weights of two studies of one name, a shrinking n_trials."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from studyutil import TINY_BASE, make_images, study_dict, write_study

from dwsearch.errors import ConfigError, StudyError
from dwsearch.study.config import parse_study_config
from dwsearch.study.results import list_studies, load_results
from dwsearch.study.runner import run_study
from dwsearch.study.storage import describe_url, open_storage, weights_folder
from dwsearch.study.worker import WorkerOptions, _pid_alive


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path / "studies"))
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))


def config(images: Path, **changes: Any) -> Any:
    return parse_study_config(study_dict(images, **changes), "t.yaml")


def run(cfg: Any, **kwargs: Any) -> Any:
    options = kwargs.pop("options", WorkerOptions(device="cpu", poll=0.1))
    return run_study(cfg, jobs=1, options=options, **kwargs)


def lay_out(cfg: Any, **kwargs: Any) -> Any:
    """Create the study with every slot laid out, training nothing."""
    return run(cfg, options=WorkerOptions(device="cpu", timeout=0.0), **kwargs)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwsearch", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- storages that are not study databases ------------------------------------------------------


def foreign_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        connection.execute("INSERT INTO notes (text) VALUES ('mine')")
    return path


@pytest.mark.parametrize("kind", ["foreign", "empty"])
def test_reading_never_writes_a_file_that_is_not_a_study(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "other.db"
    foreign_sqlite(path) if kind == "foreign" else path.write_bytes(b"")
    before = digest(path)
    with pytest.raises(StudyError, match=r"other\.db") as err:
        load_results("t", f"sqlite:///{path}")
    assert "\n" not in str(err.value)
    result = cli("report", "t", "--storage", f"sqlite:///{path}", "--out", str(tmp_path / "r"))
    assert "other.db" in one_line_error(result)
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "other.db"]


def test_listing_a_study_folder_reads_without_writing(images: Path, tmp_path: Path) -> None:
    run(config(images, space={"layers[0,2].block": ["conv"]}))
    folder = tmp_path / "studies"
    foreign_sqlite(folder / "notes.db")
    (folder / "empty.db").write_bytes(b"")
    before = {p.name: digest(p) for p in folder.glob("*.db")}
    listed = {s.name: s for s in list_studies()}
    assert listed["t"].trials == 1 and listed["t"].problem is None
    assert "not an Optuna study database" in (listed["notes"].problem or "")
    assert "empty" in (listed["empty"].problem or "")
    result = cli("report", env={"DWSEARCH_STUDY_DIR": str(folder)})
    assert result.returncode == 0, result.stderr
    assert "not read" in result.stdout and "Traceback" not in result.stderr
    assert {p.name: digest(p) for p in folder.glob("*.db")} == before


def test_a_study_is_never_written_into_another_programs_database(
        images: Path, tmp_path: Path) -> None:
    path = foreign_sqlite(tmp_path / "other.db")
    before = digest(path)
    with pytest.raises(StudyError, match="not an Optuna study database"):
        run(config(images), storage=f"sqlite:///{path}")
    assert digest(path) == before


def older_schema(path: Path, revision: str, library: str) -> Path:
    open_storage(f"sqlite:///{path}", create=True)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        connection.execute("UPDATE version_info SET library_version = ?", (library,))
    return path


@pytest.mark.parametrize(("revision", "advice"), [
    ("v3.0.0.d", "optuna storage upgrade --storage URL"),  # a real, older revision
    ("v99.0.0.z", "pip install -U optuna"),  # unknown here: a newer Optuna wrote it
])
def test_a_storage_of_another_optuna_version_is_one_line(tmp_path: Path, revision: str,
                                                        advice: str) -> None:
    path = older_schema(tmp_path / "old.db", revision, "3.0.0")
    before = digest(path)
    for readonly in (True, False):
        with pytest.raises(StudyError, match=r"written by optuna 3\.0\.0") as err:
            open_storage(f"sqlite:///{path}", create=False, readonly=readonly)
        assert advice in str(err.value)
    result = cli("report", "t", "--storage", f"sqlite:///{path}")
    assert advice in one_line_error(result)
    assert digest(path) == before


def bound_by_file_modes() -> list[str]:
    """A command prefix under which file modes hold: as root (CI runs as root, and root
    ignores them) the capabilities that override them are dropped with util-linux's
    setpriv; as another user, nothing."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def test_read_only_files_and_folders_are_one_line_before_anything_runs(
        images: Path, tmp_path: Path) -> None:
    data = study_dict(images, repeats=2)
    study = write_study(tmp_path / "t.yaml", data)
    db = tmp_path / "t.db"
    lay_out(parse_study_config(data, str(study)), storage=f"sqlite:///{db}")
    db.chmod(0o444)
    before = digest(db)
    dwsearch = [*bound_by_file_modes(), sys.executable, "-m", "dwsearch"]

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*dwsearch, *args], capture_output=True, text=True,
                              timeout=300, env={**os.environ,
                                                "DWSEARCH_CACHE_DIR": str(tmp_path / "c")})

    result = call("run-study", str(study), "--storage", f"sqlite:///{db}")
    assert "t.db: the file is read-only" in one_line_error(result)
    report = call("report", "t", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr  # reading needs no write access
    assert digest(db) == before
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    keep = write_study(tmp_path / "k.yaml", {**data, "name": "k", "keep_weights": True})
    result = call("run-study", str(keep), "--storage", f"sqlite:///{tmp_path / 'k.db'}",
                  "--weights-dir", str(locked / "w"))
    assert "--weights-dir" in one_line_error(result) and not (tmp_path / "k.db").exists()


def test_read_only_opening_is_refused_by_sqlite_itself(images: Path, tmp_path: Path) -> None:
    """Root ignores file modes; the report's connection must be read-only by its own mode."""
    run(config(images, space={"layers[0,2].block": ["conv"]}))
    storage = open_storage(f"sqlite:///{tmp_path / 'studies' / 't.db'}", create=False,
                           readonly=True)
    with pytest.raises(Exception, match="readonly"), storage.engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE x (y INTEGER)")


def test_an_in_memory_storage_is_refused(images: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(StudyError, match="in-memory database keeps nothing"):
            run(config(images), storage=url)


# -- journals -------------------------------------------------------------------------------


def test_a_torn_journal_is_mended_and_nothing_stored_is_lost(images: Path,
                                                             tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    url = f"journal:///{journal}"
    cfg = config(images, space={"layers[0,2].block": ["conv", "dwsep"]})
    run(cfg, storage=url, n_trials=1)
    torn = b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "sta'
    with open(journal, "ab") as file:
        file.write(torn)  # a write cut short: a crash, a full disk
    with pytest.warns(UserWarning, match="last write was cut short"):
        outcome = run(cfg, storage=url)  # resumes: appends after the mended end
    assert outcome.states == {"COMPLETE": 2}
    assert (tmp_path / "study.log.torn").read_bytes() == torn + b"\n"
    assert [t.state for t in load_results("t", url).trials] == ["COMPLETE", "COMPLETE"]
    result = cli("report", "t", "--storage", url, "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr


def test_a_garbage_line_in_a_journal_is_one_line_naming_it(images: Path,
                                                           tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    url = f"journal:///{journal}"
    run(config(images, space={"layers[0,2].block": ["conv"]}), storage=url)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:3], b"this is not json\n", *lines[3:]]))
    before = digest(journal)
    with pytest.raises(StudyError, match=r"study.log: line 4 is not a journal record"):
        run(config(images, space={"layers[0,2].block": ["conv"]}), storage=url)
    assert "line 4 is not a journal record" in one_line_error(
        cli("report", "t", "--storage", url))
    assert digest(journal) == before


# -- a resume must measure what the study began measuring -------------------------------------


def test_a_resume_on_other_images_is_refused(images: Path, tmp_path: Path) -> None:
    cfg = config(images, space={"layers[0,2].block": ["conv", "dwsep"]})
    lay_out(cfg)
    run(cfg, n_trials=1)
    other = make_images(tmp_path / "other", per_class=20)
    options = WorkerOptions(device="cpu", poll=0.1, data_dir=str(other))
    with pytest.raises(StudyError, match=r"data: .* holds other images than the study"):
        run(cfg, options=options)
    assert len(load_results("t").trials) == 2  # nothing trained on the other images
    assert [t.state for t in load_results("t").trials] == ["COMPLETE", "WAITING"]
    # The same images from another folder (another machine's copy) are the same data.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    run(cfg, options=WorkerOptions(device="cpu", poll=0.1, data_dir=str(copy)))
    assert [t.state for t in load_results("t").trials] == ["COMPLETE", "COMPLETE"]


def test_a_changed_model_file_is_refused_on_resume(images: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(TINY_BASE))
    data = study_dict(images, space={"model": [str(small)]}, repeats=2)
    lay_out(parse_study_config(data, str(tmp_path / "t.yaml")))
    run(parse_study_config(data, str(tmp_path / "t.yaml")), n_trials=1)
    wider = {**TINY_BASE, "layers": [{"block": "conv", "out_channels": 32},
                                     *TINY_BASE["layers"][1:]]}
    small.write_text(yaml.safe_dump(wider))
    with pytest.raises(StudyError, match=r"model choice .*small.yaml.* resolves to another "
                                         r"network than when the study began"):
        run(parse_study_config(data, str(tmp_path / "t.yaml")))
    assert [t.state for t in load_results("t").trials] == ["COMPLETE", "WAITING"]


# -- worker options ---------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--threads", "5000"], "threads: expected an integer in 1..1024, found 5000"),
    (["--heartbeat", "10", "--grace", "1"], "grace 1 s: a live worker beats every 10 s"),
    (["--storage", "sqlite://"], "in-memory database keeps nothing"),
])
def test_worker_options_that_would_fail_every_trial_are_refused_first(
        images: Path, tmp_path: Path, args: list[str], message: str) -> None:
    study = write_study(tmp_path / "t.yaml", study_dict(images))
    result = cli("run-study", str(study), *args,
                 env={"DWSEARCH_STUDY_DIR": str(tmp_path / "studies")})
    assert message in one_line_error(result)
    assert not (tmp_path / "studies").exists()  # no storage was made or touched


def test_the_weights_folder_check_is_not_fooled_by_root(images: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StudyError, match="cannot write the kept weights there"):
        run(config(images, keep_weights=True), options=WorkerOptions(
            device="cpu", weights_dir=str(blocker / "w")))
    assert not (tmp_path / "studies").exists()


def test_options_are_checked_in_the_python_api() -> None:
    with pytest.raises(ConfigError, match="grace 5 s"):
        WorkerOptions(device="cpu", heartbeat=10, grace=5).check()
    with pytest.raises(ConfigError, match="threads"):
        WorkerOptions(device="cpu", threads=0).check()
    with pytest.raises(ConfigError, match="heartbeat"):
        WorkerOptions(device="cpu", heartbeat="fast").check()  # type: ignore[arg-type]
    with pytest.raises(StudyError, match="expected StudyConfig"):
        run_study("study.yaml")  # type: ignore[arg-type]


def test_a_failure_of_the_machine_gives_the_slot_back(images: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk or a lost device is not the configuration's fault: its slot is laid out
    again, so the same command on a mended machine still trains every configuration."""
    import dwsearch.run

    real = dwsearch.run.train_spec
    calls = Counter[str]()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(dwsearch.run, "train_spec", flaky)
    outcome = run(config(images))
    trials = load_results("t").trials
    assert outcome.states == {"COMPLETE": 2, "FAIL": 1}
    failed = next(t for t in trials if t.state == "FAIL")
    assert failed.info.status == "error" and "No space left" in (failed.error or "")
    retry = [t for t in trials if t.info.retry_of == failed.number]
    assert len(retry) == 1 and retry[0].state == "COMPLETE"
    assert sorted(t.info.slot for t in trials if t.state == "COMPLETE") == [0, 1]


# -- kept weights ---------------------------------------------------------------------------


def test_two_storages_with_one_study_name_keep_their_own_weights(images: Path,
                                                                 tmp_path: Path) -> None:
    cfg = config(images, keep_weights=True, sampler="random", n_trials=2,
                 space={"layers[0,2].block": ["conv"]})
    first, second = tmp_path / "a" / "s.db", tmp_path / "b" / "s.db"
    for path in (first, second):
        assert run(cfg, storage=f"sqlite:///{path}").states == {"COMPLETE": 2}
    for path in (first, second):
        trials = load_results("t", f"sqlite:///{path}").trials
        kept = [Path(t.info.weights) for t in trials]
        assert trials[1].info.reused_from == 0 and kept[0] == kept[1]  # reused: same run
        assert kept[0].parent == path.parent / "s-weights" and kept[0].is_file()
    # One --weights-dir for both: the second storage's files get its token, nothing collides.
    shared = tmp_path / "w"
    for path in (tmp_path / "c.db", tmp_path / "d.db"):
        outcome = run(cfg, storage=f"sqlite:///{path}", options=WorkerOptions(
            device="cpu", weights_dir=str(shared)))
        assert outcome.states == {"COMPLETE": 2}
    assert len(list(shared.glob("t-*trial-0.pt"))) == 2


def test_the_default_weights_folder_is_beside_the_storage(tmp_path: Path) -> None:
    assert weights_folder(f"sqlite:///{tmp_path}/x/s.db", "t") == tmp_path / "x" / "s-weights"
    assert weights_folder(f"journal://{tmp_path}/j.log", "t") == tmp_path / "j-weights"
    one = weights_folder("postgresql://u:p@host/db1", "t")
    assert one != weights_folder("postgresql://u:p@host/db2", "t")
    assert one == weights_folder("postgresql://u:other@host/db1", "t")  # not the password


# -- n_trials ---------------------------------------------------------------------------------


def test_a_smaller_n_trials_on_resume_runs_no_more_than_it_says(images: Path) -> None:
    cfg = config(images, space={"layers[0,2].block": ["conv", "dwsep"]}, repeats=2)
    assert lay_out(cfg).ran == 0  # 4 slots
    assert run(cfg, n_trials=1).ran == 1
    assert run(cfg, n_trials=2).ran == 1
    trials = load_results("t").trials
    assert Counter(t.state for t in trials) == {"COMPLETE": 2, "WAITING": 2}
    assert run(cfg).ran == 2  # the file's n_trials (all): the waiting slots run
    with pytest.raises(StudyError, match=r"--n-trials 5: .* multiple of 2"):
        run(config(images, sampler="random", repeats=2, n_trials=4), n_trials=5)


# -- credentials and processes ----------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://me:s3cret@db.example/studies", "postgresql://me:***@db.example/studies"),
    ("postgresql://db.example/studies?user=me&password=s3cret",
     "postgresql://db.example/studies?user=me&password=***"),
    ("postgresql+psycopg://me:s3cret@h:5432/d?sslpassword=s3cret&sslmode=require",
     "postgresql+psycopg://me:***@h:5432/d?sslpassword=***&sslmode=require"),
    ("mysql://me:pa/ss@h/d", "mysql://me:***@h/d"),
])
def test_credentials_are_masked(url: str, shown: str) -> None:
    assert describe_url(url) == shown and "s3cret" not in describe_url(url)


def test_a_password_in_the_study_file_is_not_stored(images: Path, tmp_path: Path) -> None:
    from dwsearch.study.plan import make_plan, study_meta

    cfg = config(images, storage="postgresql://me:s3cret@db.example/studies?password=s3cret")
    assert "s3cret" not in repr(study_meta(make_plan(cfg)))


def test_a_zombie_is_dead(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: a zombie
    try:
        assert not _pid_alive(child.pid)
    finally:
        child.wait()
    assert _pid_alive(os.getpid())



def test_a_huge_study_lays_out_its_slots_in_batches(images: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A million slots at ~20 ms each took hours before the first trial; now a batch is
    laid out at the start and the workers lay out the next ones as they go."""
    import dwsearch.study.plan

    monkeypatch.setattr(dwsearch.study.plan, "LAYOUT_BATCH", 4)
    huge = config(images, sampler="random", n_trials=1_000_000)
    assert lay_out(huge).ran == 0 and len(load_results("t").trials) == 4
    grid = config(images, name="g", repeats=3,
                  space={"layers[0,2].block": ["conv", "dwsep"]})
    outcome = run(grid)
    assert outcome.states == {"COMPLETE": 6}
    assert sorted(t.info.slot for t in load_results("g").trials) == list(range(6))


def test_a_study_where_nothing_fits_stops_and_says_why(
        images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sampled configuration over the constraints, in an open-ended study (a timeout and
    no n_trials): workers added failed trials until the timeout, ~14,000 an hour."""
    import dwsearch.study.worker

    monkeypatch.setattr(dwsearch.study.worker, "INFEASIBLE_STOP", 5)
    cfg = parse_study_config({**study_dict(images, sampler="random", timeout="1h",
                                           constraints={"macs": "<= 10"}),
                              "n_trials": None}, "t.yaml")
    with pytest.raises(StudyError, match=r"the last 5 sampled configurations were all over "
                                         r"the constraints .*macs <= 10"):
        run(cfg)
    trials = load_results("t").trials
    assert len(trials) == dwsearch.study.worker.INFEASIBLE_STOP
    assert {t.info.status for t in trials} == {"infeasible"}


def test_a_new_metric_is_one_entry_of_the_table(images: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics table is the only place a metric is described: an entry makes it an
    objective and a constraint the study validates, measures, checks and stores, and a
    column the report reads."""
    from dwsearch.metrics import METRICS, Metric
    from dwsearch.report.frame import make_frames

    double = Metric("double_macs", "minimize", "MACs", "twice the MACs",
                    lambda record: 2.0 * record.macs,
                    lambda costs, timing: 2.0 * costs.macs, constrainable=True)
    monkeypatch.setitem(METRICS, "double_macs", double)  # type: ignore[index]
    cfg = config(images, objectives=["val_accuracy", "double_macs"],
                 constraints={"double_macs": "<= 100K"})  # conv 266K, dwsep 63K
    outcome = run(cfg)
    trials = load_results("t").trials
    kept = [t for t in trials if t.state == "COMPLETE"]
    assert outcome.states == {"COMPLETE": 1} and kept[0].record is not None
    assert kept[0].values == (kept[0].record.val_accuracy, 2.0 * kept[0].record.macs)
    assert all(t.info.status == "completed" for t in kept)
    assert make_frames(load_results("t")).configs["macs"].notna().all()


def test_by_default_only_weights_that_can_be_on_the_front_are_kept(images: Path) -> None:
    """keep_weights: front (the default): every finished trial writes its weights once; a
    configuration dominated for good (all repeats done, another finished one at least as
    good in every objective and better in one) loses them. Exporting a front model works
    after any study."""
    cfg = config(images, repeats=2, objectives=["val_accuracy", "macs"], train={
        "epochs": 3, "lr": 0.1, "batch_size": 16, "device": "cpu", "threads": 1,
        "precision": "fp32"}, space={"train.lr": [0.1, 1e-6], "layers[0,2].block": ["conv"]})
    assert cfg.model.keep_weights == "front"
    assert run(cfg).states == {"COMPLETE": 4}
    trials = load_results("t").trials
    means: dict[str, float] = {}
    for t in trials:
        means.setdefault(t.info.config_hash or "", 0.0)
        means[t.info.config_hash or ""] += (t.values or (0.0,))[0] / 2
    best = max(means.values())
    for t in trials:
        dominated = means[t.info.config_hash or ""] < best  # equal MACs: accuracy decides
        assert t.info.weights and Path(t.info.weights).is_file() is not dominated
    from dwsearch.export import export_trial

    front = next(t for t in trials if means[t.info.config_hash or ""] == best)
    out = export_trial(load_results("t"), front.number, "checkpoint")
    assert out.path.is_file()
