"""Studies as users run them: real console processes, killed with SIGKILL or stopped with
Ctrl-C, several workers on one study through a real PostgreSQL server and a journal file."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import postgres_server
from studyutil import dwsearch, make_images, study_dict, trial_states, wait_for, write_study

# Long enough per trial (about a second) to be caught mid-training.
SLOW_TRAIN = {"epochs": 20, "lr": 0.05, "batch_size": 8, "device": "cpu", "threads": 1,
              "precision": "fp32"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {"DWSEARCH_STUDY_DIR": str(tmp_path / "studies"),
            "DWSEARCH_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def slow_study(tmp_path: Path, images: Path, **changes: object) -> Path:
    data = study_dict(images, train=SLOW_TRAIN, repeats=2, **changes)
    return write_study(tmp_path / "study.yaml", data)


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


@pytest.mark.slow
def test_killed_worker_is_resumed_with_exactly_n_trials(images: Path, tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    study = slow_study(tmp_path, images)
    url = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    first = dwsearch("run-study", str(study), "--quiet", env=env)
    wait_for(lambda: any(s == "COMPLETE" for _, s, _ in trial_states(url, "t"))
             and any(s == "RUNNING" for _, s, _ in trial_states(url, "t")),
             120, "a finished trial and a running one")
    first.kill()
    first.wait()
    running = [n for n, s, _ in trial_states(url, "t") if s == "RUNNING"]
    assert len(running) == 1
    code, output = finish(dwsearch("run-study", str(study), "--quiet", env=env))
    assert code == 0, output
    states = trial_states(url, "t")
    complete = [info for _, s, info in states if s == "COMPLETE"]
    failed = [(n, info) for n, s, info in states if s == "FAIL"]
    assert len(complete) == 4
    assert sorted(i["slot"] for i in complete) == [0, 1, 2, 3]  # every slot once
    assert [n for n, _ in failed] == running and failed[0][1]["status"] == "killed"
    assert [i.get("retry_of") for i in complete if i.get("retry_of") is not None] == running
    # The read side links the killed trial to its retry, and the report says so.
    from dwsearch.study.results import load_results

    trials = {t.number: t for t in load_results("t", url).trials}
    retry = next(t for t in trials.values() if t.info.retry_of == running[0])
    assert trials[running[0]].info.retried_as == retry.number and trials[running[0]].superseded
    code, output = finish(dwsearch("report", "t", "--storage", url, "--out",
                                   str(tmp_path / "report"), env=env))
    assert code == 0, output
    csv = (tmp_path / "report" / "trials.csv").read_text()
    assert f"superseded: retried as trial {retry.number}" in csv


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_finishes(images: Path, tmp_path: Path,
                                                            env: dict[str, str]) -> None:
    study = slow_study(tmp_path, images)
    url = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    first = dwsearch("run-study", str(study), "--quiet", env=env)
    wait_for(lambda: any(s == "RUNNING" for _, s, _ in trial_states(url, "t")), 120,
             "a running trial")
    first.send_signal(signal.SIGINT)
    # Mostly it stops at once; where the signal landed in a finalizer it stops after the
    # running trial, which on a loaded machine (pytest -n auto) may take a minute or more.
    code, output = finish(first)
    assert code == 130, output
    assert "Traceback" not in output and "Interrupted." in output
    states = trial_states(url, "t")
    interrupted = [(n, i) for n, s, i in states if s == "FAIL"]
    # Mostly the running trial is interrupted. When the signal lands where Python swallows
    # KeyboardInterrupt (a finalizer, a weakref callback), the trial finishes and the worker
    # stops before the next: either way it stops, and nothing is lost.
    assert len(interrupted) <= 1 and all(i["status"] == "interrupted" for _, i in interrupted)
    assert len([n for n, s, _ in states if s == "COMPLETE"]) < 4
    assert not [n for n, s, _ in states if s == "RUNNING"]
    code, output = finish(dwsearch("run-study", str(study), "--quiet", env=env))
    assert code == 0, output
    states = trial_states(url, "t")
    assert Counter(s for _, s, _ in states) == {"COMPLETE": 4, **(
        {"FAIL": 1} if interrupted else {})}


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.mark.slow
def test_three_workers_share_a_postgresql_study_and_survive_a_kill(
        images: Path, tmp_path: Path, env: dict[str, str], postgres: str) -> None:
    """Three workers, each named as if on another machine, so the dead one is found by its
    heartbeat, not by its process id."""
    study = write_study(tmp_path / "study.yaml", study_dict(
        images, name="shared", train=SLOW_TRAIN, repeats=3))
    # A password in the URL (trust authentication ignores it) is never printed or stored.
    with_password = f"{postgres.replace('postgres@', 'postgres:s3cret@')}?password=s3cret"
    workers = [
        dwsearch("run-study", str(study), "--storage", with_password, "--quiet",
                 "--heartbeat", "0.5", "--grace", "4",
                 env={**env, "DWSEARCH_WORKER_ID": f"machine{i}:1"})
        for i in range(3)
    ]

    def victim_running() -> bool:
        return any(s == "RUNNING" and i.get("worker") == "machine0:1"
                   for _, s, i in trial_states(postgres, "shared"))

    wait_for(victim_running, 180, "worker 0 to be training")
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait()
    killed = [n for n, s, i in trial_states(postgres, "shared")
              if s == "RUNNING" and i.get("worker") == "machine0:1"]
    for process in workers[1:]:
        code, output = finish(process, timeout=300)
        assert code == 0, output
        assert "s3cret" not in output and "postgres:***@" in output
    states = trial_states(postgres, "shared")
    complete = [i for _, s, i in states if s == "COMPLETE"]
    failed = [(n, i) for n, s, i in states if s == "FAIL"]
    numbers = [n for n, _, _ in states]
    assert len(complete) == 6 and len(numbers) == len(set(numbers))
    assert sorted(i["slot"] for i in complete) == list(range(6))
    assert [n for n, _ in failed] == killed and failed[0][1]["status"] == "killed"
    assert any(i.get("retry_of") == killed[0] for i in complete)
    assert {i["worker"] for i in complete} <= {"machine1:1", "machine2:1", "machine0:1"}
    import optuna

    stored = optuna.load_study(study_name="shared", storage=postgres)
    assert "s3cret" not in repr(stored.user_attrs) + repr(stored._storage.get_study_system_attrs(
        stored._study_id))
    assert "s3cret" not in repr([t.user_attrs for t in stored.trials])


def test_jobs_share_a_journal_file(images: Path, tmp_path: Path, env: dict[str, str]) -> None:
    study = write_study(tmp_path / "study.yaml", study_dict(images, repeats=3))
    journal = f"journal:///{tmp_path / 'study.log'}"
    code, output = finish(dwsearch("run-study", str(study), "--storage", journal, "--jobs", "2",
                                   "--quiet", env=env))
    assert code == 0, output
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.user_attrs["dwsearch"]["worker"] for t in trials}
    assert 1 <= len(workers) <= 2 and all(w.rsplit(":", 1)[1].isdigit() for w in workers)
    assert os.path.getsize(tmp_path / "study.log") > 0


def _pop_all(plan: object, url: str, barrier: object, out: object) -> None:
    """A worker process as ``--jobs`` starts one (the study opened with ``create=False``),
    popping slots through the worker's own claim until none is left; no training."""
    import dwsearch.study.plan
    from dwsearch.study.plan import open_study
    from dwsearch.study.worker import Worker, WorkerOptions

    dwsearch.study.plan.LAYOUT_BATCH = 16  # the workers lay out most of the slots themselves
    handle = open_study(plan, url, create=False, worker=f"popper:{os.getpid()}")  # type: ignore[arg-type]
    worker = Worker(plan, handle, WorkerOptions(device="cpu"))  # type: ignore[arg-type]
    claimed = []
    barrier.wait()  # type: ignore[attr-defined]
    while (trial_id := worker._pop()) is not None:
        claimed.append(trial_id)
    out.put(claimed)  # type: ignore[attr-defined]


def test_worker_processes_on_one_sqlite_file_never_claim_a_slot_twice(
        images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four processes opened as ``run-study --jobs 4`` opens them pop 120 slots of one SQLite
    file: each slot is claimed exactly once (24 were claimed twice when worker processes
    opened the file without write-lock-first transactions), and each is laid out once,
    batch by batch, by the worker that claims the slot half-way through the last batch."""
    import multiprocessing

    import dwsearch.study.plan
    from dwsearch.study.config import parse_study_config
    from dwsearch.study.plan import make_plan, open_study

    url = f"sqlite:///{tmp_path / 'pop.db'}"
    config = parse_study_config(study_dict(images, sampler="random", n_trials=120), "t.yaml")
    plan = make_plan(config)
    monkeypatch.setattr(dwsearch.study.plan, "LAYOUT_BATCH", 16)
    open_study(plan, url, create=True)
    assert len(trial_states(url, "t")) == 16
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_pop_all, args=(plan, url, barrier, out))
                 for _ in range(4)]
    for process in processes:
        process.start()
    claims = Counter(trial_id for _ in processes for trial_id in out.get(timeout=120))
    for process in processes:
        process.join(timeout=60)
    assert all(p.exitcode == 0 for p in processes)
    assert len(claims) == 120 and sorted(set(claims.values())) == [1], claims.most_common(3)
    slots = [info["slot"] for _, _, info in trial_states(url, "t")]
    assert sorted(slots) == list(range(120))


# A trial of several seconds: long enough for another worker to watch its heartbeats.
LONG_TRAIN = {**SLOW_TRAIN, "epochs": 60}


def test_a_short_grace_does_not_kill_a_worker_that_beats_slowly(
        images: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """A worker's grace is at least three of the *watched* worker's heartbeats: a second
    worker started with a short --grace once took a live trial of a worker beating every 10 s for
    dead, retrained it, and the first crashed when it reported its result."""
    study = write_study(tmp_path / "study.yaml", study_dict(
        images, train={**LONG_TRAIN, "epochs": 80}, space={"layers[0,2].block": ["conv"]}))
    url = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    slow = dwsearch("run-study", str(study), "--heartbeat", "8", "--grace", "60", env=env)
    wait_for(lambda: any(s == "RUNNING" for _, s, _ in trial_states(url, "t")), 120,
             "the slow worker to be training")
    watcher = dwsearch("run-study", str(study), "--heartbeat", "0.5", "--grace", "1.5", env=env)
    for process in (slow, watcher):
        code, output = finish(process)
        assert code == 0, output
    assert [(s, i["status"]) for _, s, i in trial_states(url, "t")] == [
        ("COMPLETE", "completed")]


def stop_outside_a_write(process: subprocess.Popen[str], db: Path) -> None:
    """SIGSTOP ``process`` at a moment it holds no SQLite write lock. (A process frozen inside
    a write transaction blocks every other writer of the file until it wakes: SQLite's nature,
    why many machines should share PostgreSQL. That is not what this test is about.)"""
    import sqlite3
    import time

    for _ in range(100):
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        con = sqlite3.connect(db, timeout=0.2)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError("the worker held the SQLite write lock at every try")


def test_a_worker_whose_trial_was_taken_over_discards_its_result(
        images: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """A worker that stops answering (here: stopped with SIGSTOP, as a machine that hangs or
    a laptop that sleeps) has its trial retried by another; when it wakes up it drops its own
    result with one line and goes on, instead of crashing on the finished trial."""
    study = write_study(tmp_path / "study.yaml", study_dict(
        images, train=LONG_TRAIN, space={"layers[0,2].block": ["conv"]}))
    url = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    options = ["--heartbeat", "0.5", "--grace", "2"]
    sleeper = dwsearch("run-study", str(study), *options, env=env)
    wait_for(lambda: any(s == "RUNNING" for _, s, _ in trial_states(url, "t")), 120,
             "the first worker to be training")
    other = dwsearch("run-study", str(study), *options, env=env)
    stop_outside_a_write(sleeper, tmp_path / "studies" / "t.db")
    try:
        wait_for(lambda: any(i.get("status") == "killed" for _, _, i in trial_states(url, "t")),
                 120, "the other worker to take the trial over")
    finally:
        sleeper.send_signal(signal.SIGCONT)
    outputs = []
    for process in (sleeper, other):
        code, output = finish(process)
        assert code == 0 and "Traceback" not in output, output
        outputs.append(output)
    assert "taken over" in outputs[0] and "result is discarded" in outputs[0]
    states = trial_states(url, "t")
    assert [(s, i["status"]) for _, s, i in states] == [("FAIL", "killed"),
                                                       ("COMPLETE", "completed")]
    assert states[1][2]["retry_of"] == states[0][0]
