"""The command line: output, help everywhere, one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dwsearch.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_blocks_lists_with_descriptions_and_wildcards() -> None:
    code, out = run("blocks", "dw*")
    assert code == 0
    assert out.startswith("dwsep ") and "Depthwise" in out and "conv " not in out
    code, out = run("blocks")
    assert code == 0 and len(out.splitlines()) >= 12


@pytest.mark.parametrize("name", ["seed_cnn", "seed_dwsep"])
def test_profile_prints_rows_and_totals(name: str) -> None:
    code, out = run("profile", name)
    assert code == 0
    lines = out.splitlines()
    assert sum(line.strip()[:2].strip().isdigit() for line in lines) == 14  # one row per layer
    assert any(line.startswith("params ") and "MACs" in line for line in lines)
    assert "convention:" in out


def test_profile_json_and_input_override() -> None:
    code, out = run("profile", "seed_dwsep", "--format", "json", "--bn", "folded",
                    "--input", "3,64,64", "--set", "layers[9].block=global_avgpool")
    assert code == 0
    data = json.loads(out)
    assert data["bn"] == "folded" and len(data["layers"]) == 14
    assert data["layers"][10]["output"] == "1024"


def test_profile_latency() -> None:
    code, out = run("profile", "seed_dwsep", "--latency", "--threads", "1")
    assert code == 0 and "latency" in out and "1 threads" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "seed_cn"], "did you mean seed_cnn"),
        (["profile", "missing.yaml"], "no such spec file"),
        (["profile", "seed_cnn", "--set", "layers[0].kernal_size=5"], "did you mean 'kernel_size'"),
        (["profile", "seed_cnn", "--set", "layers[3].in_channels=7"], "in_channels is 7"),
        (["profile", "seed_cnn", "--input", "3,a,4"], "expected integers"),
        (["blocks", "zz*"], "no block matches"),
    ],
)
def test_user_mistakes_give_one_line_and_nonzero_exit(args: list[str], message: str) -> None:
    code, out = run(*args)
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_no_traceback_from_the_real_console_script(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [3, 32, 32]\nnum_classes: 10\nlayers: [{block: conv, out_channels: 8, "
                   "stride: 0}]\n")
    proc = subprocess.run([sys.executable, "-m", "dwsearch", "profile", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "layers[0] (conv): stride must be a positive integer, found 0" in proc.stderr


@pytest.mark.parametrize("command", [[], ["blocks"], ["profile"], ["show"], ["specs"]])
def test_help_everywhere(command: list[str]) -> None:
    code, out = run(*command, "--help")
    assert code == 0 and "Usage:" in out


def test_show_applies_overrides() -> None:
    code, out = run("show", "seed_cnn", "--set", "layers[5].p=0.2")
    assert code == 0 and "{block: dropout2d, p: 0.2}" in out


def test_a_bug_shows_its_traceback_and_asks_for_a_report() -> None:
    import click

    from dwsearch.errors import DataError

    @click.command("boom-bug")
    def boom_bug() -> None:
        raise KeyError("internal")

    @click.command("boom-user")
    def boom_user() -> None:
        try:
            raise FileNotFoundError("root cause")
        except FileNotFoundError as err:
            raise DataError("data/x: no such folder\nsecond line") from err

    main.add_command(boom_bug)
    main.add_command(boom_user)
    try:
        result = CliRunner().invoke(main, ["boom-bug"])
        assert result.exit_code == 70
        assert "internal error" in result.output and "report" in result.output
        result = CliRunner().invoke(main, ["boom-user"])
        assert result.exit_code == 1
        assert result.output == "Error: data/x: no such folder\n"
        # DWSEARCH_DEBUG=1 re-raises the user error with its cause chained.
        result = CliRunner().invoke(main, ["boom-user"], env={"DWSEARCH_DEBUG": "1"})
        assert isinstance(result.exception, DataError)
        assert isinstance(result.exception.__cause__, FileNotFoundError)
    finally:
        main.commands.pop("boom-bug")
        main.commands.pop("boom-user")


def test_options_come_from_the_config_dataclasses() -> None:
    from dwsearch.data import DataConfig
    from dwsearch.train import TrainConfig

    code, out = run("train", "--help")
    assert code == 0
    for flag in ("--lr", "--momentum", "--weight-decay", "--schedule", "--precision",
                 "--channels-last / --no-channels-last", "--val-size", "--subset",
                 "--test-subset", "--dataset"):
        assert flag in out, flag
    assert f"[default: {TrainConfig().lr}]" in out
    assert f"[default: {DataConfig().val_size}]" in out
    assert "constant|cosine|onecycle" in out


def test_out_of_range_option_names_the_flag() -> None:
    code, out = run("train", "seed_cnn", "--lr", "-1", "--epochs", "1")
    assert code == 1
    assert out.strip() == "Error: --lr: expected a finite number > 0, found -1.0"


def test_the_readme_override_example_runs() -> None:
    """A block changed by --set keeps the old block's arguments: the README's example drops
    the convs' bias, which dwsep does not take (it used to fail as printed)."""
    code, out = run("profile", "seed_cnn", "--set", "layers[5].p=0.1", "--set",
                    "layers[0:3].block=dwsep", "--set", "layers[0:3].bias=null")
    assert code == 0, out
    code, out = run("profile", "seed_cnn", "--set", "layers[0:3].block=dwsep")
    assert code == 1 and "layers[0] (dwsep): unknown argument 'bias'" in out


def test_run_study_takes_worker_defaults_from_worker_options(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """run-study's --device, --threads, --data-dir, --heartbeat, --grace and --weights-dir
    default to WorkerOptions' fields, help included: written once, in the dataclass (a
    changed default there is the command's default); without them the command runs with
    exactly WorkerOptions' defaults."""
    import dataclasses
    import importlib

    import dwsearch.cli.study as module
    import dwsearch.study.runner
    from dwsearch.study.options import WorkerOptions

    fields = {f.name: f for f in dataclasses.fields(WorkerOptions)}
    names = ("device", "threads", "data_dir", "heartbeat", "grace", "weights_dir")
    params = {p.name: p for p in module.run_study_cmd.params}
    for name in names:
        assert params[name].default == fields[name].default, name
        assert params[name].help == fields[name].metadata["help"], name
    try:
        with monkeypatch.context() as patch:
            patch.setattr(fields["heartbeat"], "default", 7.5)
            patch.setattr(fields["device"], "default", "cpu")
            changed = {p.name: p for p in importlib.reload(module).run_study_cmd.params}
        assert changed["heartbeat"].default == 7.5 and changed["device"].default == "cpu"
    finally:
        importlib.reload(module)
    seen: list[WorkerOptions] = []

    def fake_run_study(config: object, **kwargs: object) -> None:
        seen.append(kwargs["options"])  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(dwsearch.study.runner, "run_study", fake_run_study)
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nbase: seed_cnn\nsampler: grid\n")
    result = CliRunner().invoke(main, ["run-study", str(study), "-q"])
    assert result.exit_code == 130, result.output
    assert seen == [WorkerOptions(worker_id=seen[0].worker_id)]
