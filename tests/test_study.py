"""Studies in one process on a tiny real image folder: plans, spaces, storage contents,
resume, reuse, constraints, pruning rules, and the read side."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from studyutil import TINY_BASE, make_images, study_dict

from dwsearch.errors import StudyError
from dwsearch.study.config import PrunerSection, parse_study_config
from dwsearch.study.plan import derive_seed, make_plan
from dwsearch.study.pruning import CostMedian
from dwsearch.study.results import load_results
from dwsearch.study.runner import apply_overrides, run_study
from dwsearch.study.space import Space, make_divisible
from dwsearch.study.worker import WorkerOptions


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
    return run_study(cfg, jobs=1, options=WorkerOptions(device="cpu", poll=0.1), **kwargs)


# -- spaces -----------------------------------------------------------------------------------


def test_grid_is_the_product_with_conditional_parameters(images: Path) -> None:
    cfg = config(images, space={
        "layers[0,2].block": ["conv", "dwsep", "hybrid"],
        "layers[0,2].ratio": {"choices": [0.25, 0.75], "when": {"block": "hybrid"}},
        "layers[0,2].multiplier": [1, 2],  # only dwsep and hybrid take a multiplier
        "train.lr": [0.05, 0.1],
    })
    grid = Space(cfg).grid()
    # conv: 1; dwsep: 2 multipliers; hybrid: 2 ratios x 2 multipliers. Times 2 lrs.
    assert len(grid) == (1 + 2 + 4) * 2
    assert all("layers[0,2].ratio" not in c for c in grid if c["layers[0,2].block"] != "hybrid")
    spec, train = Space(cfg).apply({"layers[0,2].block": "hybrid", "layers[0,2].ratio": 0.25,
                                    "layers[0,2].multiplier": 2, "train.lr": 0.1})
    assert spec.layers[0].args == {"out_channels": 8, "ratio": 0.25, "multiplier": 2}
    assert train == {"lr": 0.1}


def test_ablation_changes_one_factor_at_a_time(images: Path) -> None:
    cfg = config(images, sampler="ablation", repeats=2, space={
        "layers[0,2].block": ["conv", "dwsep"],
        "layers[0,2].kernel_size": [3, 5, 7],
        "width": [0.5, 1.0],
    })
    plan = make_plan(cfg)
    configs = [(s.role, s.factor, dict(s.config or {})) for s in plan.slots if s.repeat == 0]
    assert configs == [
        ("base", None, {}),
        ("ablation", "width", {"width": 0.5}),
        ("ablation", "layers[0,2].block", {"layers[0,2].block": "dwsep"}),
        ("ablation", "layers[0,2].kernel_size", {"layers[0,2].kernel_size": 5}),
        ("ablation", "layers[0,2].kernel_size", {"layers[0,2].kernel_size": 7}),
    ]
    assert plan.trials == 10 and {s.repeat for s in plan.slots} == {0, 1}


def test_block_change_drops_arguments_the_new_block_does_not_take(images: Path) -> None:
    base = {**TINY_BASE, "layers": [{"block": "dwsep", "out_channels": 8, "multiplier": 2,
                                     "se_ratio": 0.25}, *TINY_BASE["layers"][1:]]}
    cfg = config(images, base=base, space={"layers[0].block": ["conv", "inverted_residual"]})
    spec, _ = Space(cfg).apply({"layers[0].block": "conv"})
    assert spec.layers[0].to_dict() == {"block": "conv", "out_channels": 8}
    spec, _ = Space(cfg).apply({"layers[0].block": "inverted_residual"})
    assert spec.layers[0].to_dict() == {"block": "inverted_residual", "out_channels": 8,
                                        "se_ratio": 0.25}


def test_width_scales_channels_but_not_the_classifier(images: Path) -> None:
    cfg = config(images, space={"width": [0.5, 2.0]})
    spec, _ = Space(cfg).apply({"width": 2.0})
    assert [layer.args.get("out_channels") for layer in spec.layers[:3]] == [16, None, 32]
    assert spec.layers[-1].args["out_features"] == 3
    assert make_divisible(0.5 * 20) == 16 and make_divisible(3 * 8) == 24


def test_width_one_is_the_base_network(images: Path) -> None:
    """Channel counts that are not multiples of 8 (12, 20) stay as written at width 1.0;
    other widths round as MobileNet does. The ablation's base is width 1.0, so 1.0 is no
    factor of its own."""
    base = {**TINY_BASE, "layers": [{"block": "conv", "out_channels": 12},
                                    TINY_BASE["layers"][1],
                                    {"block": "conv", "out_channels": 20},
                                    *TINY_BASE["layers"][3:]]}
    cfg = config(images, base=base, sampler="ablation", space={"width": [0.5, 1.0, 2.0]})
    space = Space(cfg)
    spec, _ = space.apply({"width": 1.0})
    assert spec.hash() == space.base.hash()
    assert [layer.args.get("out_channels") for layer in spec.layers[:3]] == [12, None, 20]
    spec, _ = space.apply({"width": 2.0})
    assert [layer.args.get("out_channels") for layer in spec.layers[:3]] == [24, None, 40]
    plan = make_plan(cfg)
    assert [dict(s.config or {}) for s in plan.slots] == [{}, {"width": 0.5}, {"width": 2.0}]


def test_entries_for_different_blocks_may_share_a_layer(images: Path) -> None:
    cfg = config(images, space={
        "layers[0,2].block": ["conv", "dwsep"],
        "layers[0,2].kernel_size": {"choices": [3, 5], "when": {"block": "conv"}},
        "layers[0:3].kernel_size": {"choices": [5, 7], "when": {"block": "conv_dw"}},
    })
    grid = Space(cfg).grid()
    assert len(grid) == 4
    spec, _ = Space(cfg).apply({"layers[0,2].block": "dwsep", "layers[0:3].kernel_size": 7,
                                "layers[0,2].kernel_size": 3})
    assert spec.layers[0].args["kernel_size"] == 7  # the conv entry does not apply to dwsep


@pytest.mark.parametrize(("space", "message"), [
    ({"layers[9].block": ["conv"]}, "layer index 9 out of range 0..4"),
    ({"layers[0].block": ["dwsepp"]}, "did you mean dwsep"),
    ({"layers[0].kernel_size": [4]}, "kernel_size must be odd"),
    ({"layers[0].in_channels": [4]}, "in_channels is inferred"),
    ({"train.seed": [1]}, "not a training field a space can vary"),
    ({"train.lr": [-1.0]}, "lr: expected a finite number > 0"),
    ({"width": [0]}, "widths are numbers in (0, 16]"),
    ({"depth": [1]}, "unknown key; allowed: layers[i].ARG"),
    ({"layers[1].block": ["linear"]}, "configuration"),
])
def test_bad_spaces_are_located_before_anything_runs(images: Path, space: dict[str, Any],
                                                      message: str, tmp_path: Path) -> None:
    with pytest.raises(StudyError) as info:
        make_plan(config(images, space=space))
    assert message in str(info.value) and str(info.value).startswith("t.yaml: ")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "studies").exists()  # nothing created


def test_overrides_edit_the_study_file_data() -> None:
    data = {"name": "x", "train": {"epochs": 10}, "space": {"width": [1.0]}}
    out = apply_overrides(data, {"train.epochs": 2, "space.layers[0:3].block": ["conv"],
                                 "repeats": 3})
    assert out["train"] == {"epochs": 2} and out["repeats"] == 3
    assert out["space"] == {"width": [1.0], "layers[0:3].block": ["conv"]}
    assert data["train"] == {"epochs": 10}  # unchanged


# -- running ----------------------------------------------------------------------------------


def test_grid_study_runs_stores_records_and_resumes(images: Path, tmp_path: Path) -> None:
    cfg = config(images, repeats=2)
    outcome = run(cfg)
    assert outcome.planned == 4 and outcome.ran == 4 and outcome.states == {"COMPLETE": 4}
    url = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    # A plain Optuna study: the dashboard and load_study open it.
    study = optuna.load_study(study_name="t", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "macs"]  # named in optuna-dashboard
    results = load_results("t")
    by_config: dict[str, list[Any]] = {}
    for trial in results.trials:
        assert trial.state == "COMPLETE" and trial.record is not None
        assert trial.values == (trial.record.val_accuracy, trial.record.macs)
        assert trial.info.seed == derive_seed(0, trial.info.repeat)
        assert trial.record.extra["trial"] == trial.number
        assert trial.record.spec_hash and trial.record.test_accuracy is not None
        by_config.setdefault(trial.info.config_hash, []).append(trial)
    assert sorted(len(v) for v in by_config.values()) == [2, 2]
    # Repeats share seeds across configurations (paired comparisons).
    seeds = {c: sorted(t.info.seed for t in v) for c, v in by_config.items()}
    assert len({tuple(s) for s in seeds.values()}) == 1
    assert results.meta["objectives"] == ["val_accuracy:max", "macs:min"]
    assert results.meta["base"]["hash"] and results.meta["config"]["repeats"] == 2
    # Again: resumes, trains nothing.
    again = run(cfg)
    assert again.ran == 0 and again.states == {"COMPLETE": 4}


def test_a_changed_study_is_refused_on_resume(images: Path) -> None:
    run(config(images, space={"layers[0,2].block": ["conv"]}))
    with pytest.raises(StudyError, match=r"t.yaml: space\.layers\[0,2\]\.block differs from"):
        run(config(images, space={"layers[0,2].block": ["dwsep"]}))
    # What does not change the measurements may change.
    assert run(config(images, space={"layers[0,2].block": ["conv"]}, description="x")).ran == 0


def test_a_study_begun_before_an_option_existed_resumes_at_its_default(
        images: Path, tmp_path: Path) -> None:
    """A study stored by an older dwsearch lacks options added since; the file may leave them
    at their defaults (what the older version did) but not change them."""
    cfg = config(images, space={"layers[0,2].block": ["conv"]})
    run(cfg)
    url = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    study = optuna.load_study(study_name="t", storage=url)
    meta = study.user_attrs["dwsearch"]
    del meta["config"]["data"]["test_fraction"], meta["config"]["train"]["nesterov"]
    study.set_user_attr("dwsearch", meta)
    assert run(cfg).ran == 0
    changed = {**study_dict(images, space={"layers[0,2].block": ["conv"]})}
    changed["train"] = {**changed["train"], "nesterov": True}
    with pytest.raises(StudyError, match=r"train\.nesterov differs from the study"):
        run(parse_study_config(changed, "t.yaml"))


def test_claims_do_not_change_what_a_study_measures(images: Path, tmp_path: Path) -> None:
    """A study begun before study files had claims (its stored config has no claims key)
    resumes with a file that states some: claims are not what it measures. The stored study
    keeps the claims it was begun with (its report reads them from there)."""
    base = {**TINY_BASE, "name": "tiny"}
    space = {"layers[0,2].block": ["conv"]}
    run(config(images, base=base, space=space))
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'studies' / 't.db'}")
    meta = study.user_attrs["dwsearch"]
    assert meta["config"]["claims"] is None
    del meta["config"]["claims"]
    study.set_user_attr("dwsearch", meta)
    claims = {"document": "notes.md", "items": [
        {"claim": "tiny is small", "value": {"metric": "params", "of": "tiny", "at_most": "1M"}}]}
    stated = config(images, base=base, space=space, claims=claims)
    assert stated.claims is not None and stated.claims.items[0].rule.bound.low == 1e6
    assert run(stated).ran == 0
    assert "claims" not in load_results("t").config


@pytest.mark.parametrize(("base", "name", "message"), [
    ({**TINY_BASE, "name": "tiny"}, "tiny", None),
    ({**TINY_BASE, "name": "tiny"}, "tinny",
     "t.yaml: claims.items[0].ratio.of: 'tinny' is not a model of this study; did you mean "
     "'tiny'? its models: tiny, seed_dwsep"),
    (TINY_BASE, "tiny", "t.yaml: claims.items[0].ratio.of: 'tiny' is not a model of this study; "
                        "its models: seed_dwsep"),
])
def test_claims_name_models_the_study_trains(images: Path, base: dict[str, Any], name: str,
                                             message: str | None) -> None:
    claims = {"items": [{"claim": "smaller", "ratio": {
        "metric": "params", "of": name, "to": "seed_dwsep", "below": 1}}]}
    cfg = config(images, base=base, space={"model": ["seed_dwsep"]}, claims=claims)
    if message is None:
        make_plan(cfg)
    else:
        with pytest.raises(StudyError, match=re.escape(message) + "$"):
            make_plan(cfg)


def test_workers_opening_a_fresh_database_at_once_make_one_study(images: Path,
                                                                tmp_path: Path) -> None:
    """Workers started together on a new database race to create its tables and the study
    (Optuna creates the schema without a lock): every one opens it, and the slots are laid
    out once."""
    import threading

    from dwsearch.study.plan import open_study

    plan = make_plan(config(images, repeats=2))
    errors: list[BaseException] = []
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        barrier = threading.Barrier(5)

        def open_it(url: str = url, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                open_study(plan, url, worker=threading.current_thread().name)
            except BaseException as err:  # collected, asserted below
                errors.append(err)

        threads = [threading.Thread(target=open_it) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        trials = optuna.load_study(study_name="t", storage=url).trials
        assert sorted(t.user_attrs["dwsearch"]["slot"] for t in trials) == list(
            range(len(plan.slots)))


def test_workers_on_one_sqlite_file_never_claim_a_trial_twice(tmp_path: Path) -> None:
    """SQLite has no row locks: without a transaction that takes the write lock first, two
    workers read the same WAITING trial and both claim it (26 of 60 here, before the fix)."""
    import threading
    from collections import Counter

    from dwsearch.study.storage import open_storage

    url = f"sqlite:///{tmp_path / 'pop.db'}"
    study = optuna.create_study(storage=open_storage(url, create=True), study_name="pop")
    for _ in range(60):
        study.enqueue_trial({})
    claims: Counter[int] = Counter()
    barrier = threading.Barrier(6)

    def worker() -> None:
        storage = open_storage(url, create=True)
        study_id = storage.get_study_id_from_name("pop")
        barrier.wait()
        while waiting := storage.get_all_trials(
                study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            for trial in sorted(waiting, key=lambda t: t.number):
                if storage.set_trial_state_values(trial._trial_id,
                                                  state=optuna.trial.TrialState.RUNNING):
                    claims[trial.number] += 1
                    break

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claims) == 60 and set(claims.values()) == {1}


def test_an_in_memory_sqlite_storage_still_works() -> None:
    """Only SQLite files get the write-lock-first transactions (their setup reconnects, which
    would drop an in-memory database)."""
    from dwsearch.study.storage import open_storage

    study = optuna.create_study(storage=open_storage("sqlite:///:memory:", create=True),
                                study_name="m")
    study.enqueue_trial({})
    assert len(study.trials) == 1


def test_identical_runs_are_reused_not_retrained(images: Path) -> None:
    cfg = config(images, sampler="random", n_trials=3, space={"layers[0,2].block": ["conv"]})
    outcome = run(cfg)
    results = load_results("t")
    reused = [t for t in results.trials if t.info.reused_from is not None]
    assert outcome.states == {"COMPLETE": 3} and len(reused) == 2
    source = results.trials[reused[0].info.reused_from]
    assert reused[0].values == source.values and reused[0].record == source.record


def test_sampled_configurations_train_every_repeat(images: Path) -> None:
    cfg = config(images, sampler="tpe", n_trials=4, repeats=2, space={
        "layers[0,2].block": ["conv", "dwsep"], "train.lr": {"low": 0.01, "high": 0.1}})
    outcome = run(cfg)
    assert outcome.states == {"COMPLETE": 4}
    trials = load_results("t").trials
    groups: dict[str, set[int]] = {}
    for t in trials:
        groups.setdefault(t.info.config_hash, set()).add(t.info.repeat)
    assert sorted(map(sorted, groups.values())) == [[0, 1], [0, 1]]


def test_constraints_leave_configurations_out_before_training(images: Path) -> None:
    cfg = config(images, constraints={"macs": "<= 50K"},
                 space={"layers[0,2].block": ["conv", "dwsep"]})
    plan = make_plan(cfg)
    assert [dict(s.config or {}) for s in plan.slots] == [{"layers[0,2].block": "dwsep"}]
    assert "macs <= 50K" in plan.skipped[0][1]
    sampled = config(images, sampler="random", n_trials=2, constraints={"macs": "<= 50K"},
                     space={"layers[0,2].block": ["conv", "dwsep"]})
    outcome = run(sampled)
    trials = load_results("t").trials
    infeasible = [t for t in trials if t.info.status == "infeasible"]
    assert outcome.states.get("COMPLETE") == 2
    assert all("over the constraints macs <= 50K" in (t.error or "") for t in infeasible)


def test_diverged_trials_are_recorded_with_their_reason(images: Path) -> None:
    outcome = run(config(images, train={"epochs": 2, "lr": 1e6, "batch_size": 16,
                                        "device": "cpu", "threads": 1, "precision": "fp32"},
                         space={"layers[0,2].block": ["conv"]}))
    trial = load_results("t").trials[0]
    assert outcome.states == {"FAIL": 1}
    assert trial.info.status == "diverged" and "loss became" in (trial.error or "")
    assert trial.record is not None and trial.record.status == "diverged"


def test_cost_median_compares_with_trials_of_similar_macs() -> None:
    peers = [(100, [0.5, 0.6]), (110, [0.4, 0.7]), (120, [0.6, 0.8]), (1000, [0.9, 0.95])]
    rule = CostMedian(PrunerSection(name="cost_median", warmup_epochs=1, min_trials=3,
                                    macs_ratio=1.5), lambda: peers)
    assert rule.reason(1, 0.49, 100) is not None  # below 0.5, the median of the three cheap
    assert rule.reason(1, 0.51, 100) is None
    assert rule.reason(1, 0.10, 1000) is None  # one peer of its cost: too few to judge
    reason = rule.reason(2, 0.65, 105)
    assert reason is not None and "median 70.00% of 3 finished trials within 1.5x" in reason


def test_pruning_ends_trials_as_pruned(images: Path) -> None:
    cfg = config(images, objectives=["val_accuracy"], repeats=3, train={
        "epochs": 2, "lr": 0.05, "batch_size": 16, "device": "cpu", "threads": 1,
        "precision": "fp32"},
        pruner={"name": "median", "warmup_epochs": 0, "startup_trials": 1},
        space={"layers[0,2].block": ["conv", "dwsep"], "train.lr": [0.05, 1e-5]})
    outcome = run(cfg)
    assert outcome.finished == 12
    pruned = [t for t in load_results("t").trials if t.state == "PRUNED"]
    assert pruned and all(t.record is not None and "pruned" in t.record.message for t in pruned)
    assert all(t.record.test_accuracy is None for t in pruned if t.record)
