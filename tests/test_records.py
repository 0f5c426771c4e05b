"""The run record: plain, versioned data that round-trips through JSON; no torch needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dwsearch.errors import RecordError
from dwsearch.records import (
    RECORD_FORMAT,
    TRIAL_INFO_FORMAT,
    TRIAL_STATUSES,
    EpochMetrics,
    RunRecord,
    TrialInfo,
)


def make_record(**changes: object) -> RunRecord:
    base: dict[str, object] = dict(
        spec={"name": "tiny", "input": [3, 8, 8], "num_classes": 2,
              "layers": [{"block": "global_avgpool"}, {"block": "linear", "out_features": 2}]},
        spec_hash="0123456789abcdef", name="tiny", params=8, macs=200, bn="counted",
        activations=2, saved_bytes=1024,
        layers=({"layer": 0, "block": "global_avgpool", "params": 0, "macs": 192},),
        status="completed", message="trained 2 epoch(s)",
        epochs=(EpochMetrics(1, 1.0, 0.5, 0.9, 0.6, 0.1, 2.0, 64.0, 0.1),
                EpochMetrics(2, 0.8, 0.6, 0.7, 0.7, 0.1, 2.0, 66.0, 0.1)),
        val_accuracy=0.7, val_loss=0.7, best_val_accuracy=0.7, test_accuracy=0.65,
        test_loss=0.8, train_seconds=4.2, load_seconds=0.3, seed=3,
        train={"lr": 0.1, "epochs": 2}, data={"val_size": 10},
        data_source="image folders (JPEG; a lossy re-encoding)", train_images=128,
        val_images=10, test_images=20, num_classes=2, device="cpu", device_name="CPU",
        precision="fp32", threads=2, host="h", versions={"torch": "2", "dwsearch": "0.1"},
        created="2026-11-25T00:00:00+00:00",
    )
    base.update(changes)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_round_trip_through_json() -> None:
    record = make_record(latency={"median_ms": 1.5, "batch_size": 1})
    again = RunRecord.from_json(record.to_json())
    assert again == record
    assert again.latency_ms == 1.5 and again.flops == 400 and again.images_per_second == 66.0
    assert again.lossy_data


def test_flat_row_has_scalars_only() -> None:
    row = make_record().flat()
    assert row["train.lr"] == 0.1 and row["data.val_size"] == 10 and row["versions.torch"] == "2"
    assert "spec" not in row and "layers" not in row and "epochs" not in row
    assert all(not isinstance(v, (dict, list, tuple)) for v in row.values())
    json.dumps(row)


def test_newer_formats_are_refused_with_the_version() -> None:
    data = make_record().to_dict()
    data["format"] = RECORD_FORMAT + 1
    with pytest.raises(RecordError, match=f"format {RECORD_FORMAT + 1} was written by a newer"):
        RunRecord.from_dict(data, where="trial 7")
    with pytest.raises(RecordError, match="trial 7: record lacks params"):
        RunRecord.from_dict({k: v for k, v in make_record().to_dict().items() if k != "params"},
                            where="trial 7")
    with pytest.raises(RecordError, match="not JSON"):
        RunRecord.from_json("{", where="x")


def test_records_import_no_torch() -> None:
    code = "import sys, dwsearch.records; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the trial info ---------------------------------------------------------------------------

_maybe_int = st.none() | st.integers(0, 2**31)
_text = st.text(max_size=20)
_config = st.none() | st.dictionaries(_text, st.integers() | _text | st.booleans(), max_size=4)


@given(st.builds(
    TrialInfo, slot=_maybe_int, repeat=st.integers(0, 9), role=st.sampled_from(
        ["base", "ablation", "grid", "sample"]), factor=st.none() | _text, config=_config,
    config_hash=st.none() | _text, seed=_maybe_int, run_key=st.none() | _text,
    worker=st.none() | _text, status=st.none() | st.sampled_from(TRIAL_STATUSES),
    reused_from=_maybe_int, retry_of=_maybe_int, replaces_a_failed_sample=st.booleans(),
    weights=st.none() | _text, trial_seconds=st.none() | st.floats(0, 1e6),
    overhead_seconds=st.none() | st.floats(0, 1e6)))
def test_trial_info_round_trips_through_json(info: TrialInfo) -> None:
    stored = json.loads(json.dumps(info.to_attrs()))  # as a storage keeps it
    assert TrialInfo.from_attrs(stored) == info
    assert "retried_as" not in stored and stored["format"] == TRIAL_INFO_FORMAT


def test_trial_info_reads_the_untyped_dict_of_earlier_studies() -> None:
    """Format 1: what workers wrote before TrialInfo (the same keys, and some extra)."""
    old = {"format": 1, "slot": 3, "repeat": 1, "role": "grid", "factor": None,
           "config": {"layers[0].block": "dwsep"}, "config_hash": "ab", "seed": 7,
           "worker": "h:1", "status": "completed", "retried_as": 9, "unknown": True}
    info = TrialInfo.from_attrs(old)
    assert (info.slot, info.repeat, info.role, info.seed, info.status) == (
        3, 1, "grid", 7, "completed")
    assert info.retried_as is None  # derived on reading the study, never taken as stored
    assert TrialInfo.from_attrs(None) == TrialInfo()


@pytest.mark.parametrize(("raw", "message"), [
    ({"format": TRIAL_INFO_FORMAT + 1}, "written by a newer dwsearch"),
    ({"format": "2"}, "is not a format number"),
    ([1, 2], "expected a mapping, found list"),
    ({"config": [1]}, "config: expected a mapping"),
])
def test_bad_trial_info_is_one_line(raw: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        TrialInfo.from_attrs(raw, "trial 4")
