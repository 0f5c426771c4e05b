"""Files written whole or not at all (checkpoints, the tensor cache, report files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dwsearch.files import TEMP_PREFIX, atomic_file, write_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    write_atomically(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as fh:  # Ctrl-C mid-write
        fh.write(b"half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_the_temporary_file_is_beside_the_target_with_a_recognisable_name(
        tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    with atomic_file(target) as fh:
        names = [p.name for p in tmp_path.iterdir()]
        fh.write(b"x")
    assert len(names) == 1 and names[0].startswith(TEMP_PREFIX + "report.md")
