"""`atomic_file` and `atomic_folder`: a destination is either left as it was or fully replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from voicefleet.models.checkpoint.files import DIR_MODE, FILE_MODE, atomic_file, atomic_folder


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _existing(folder: Path) -> Path:
    folder.mkdir()
    (folder / "keep.txt").write_text("user data")
    return folder


# --- atomic_file -----------------------------------------------------------------------------

def test_file_is_written_with_the_usual_permissions_and_nothing_else_is_left(tmp_path):
    dest = tmp_path / "sub" / "out.bin"
    with atomic_file(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert _names(dest.parent) == ["out.bin"]
    assert _mode(dest) == FILE_MODE == 0o666 & ~_umask()


def test_file_exception_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


# --- atomic_folder ---------------------------------------------------------------------------

def test_folder_appears_complete_with_the_usual_permissions(tmp_path):
    dest = tmp_path / "a" / "dataset"
    with atomic_folder(dest) as staging:
        assert staging.parent == dest.parent and staging.is_dir() and not any(staging.iterdir())
        assert not dest.exists()  # nothing at the destination while the folder is written
        (staging / "part.txt").write_text("rows")
    assert (dest / "part.txt").read_text() == "rows"
    assert _names(dest.parent) == ["dataset"]
    assert _mode(dest) == DIR_MODE == 0o777 & ~_umask()


def test_folder_replaces_an_empty_folder_without_replace(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    with atomic_folder(dest) as staging:
        (staging / "x").write_text("1")
    assert _names(dest) == ["x"] and _names(tmp_path) == ["out"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("replace", [False, True])
def test_folder_exception_leaves_the_destination_and_no_staging(tmp_path, exc, replace):
    dest = tmp_path / "out"
    if replace:
        _existing(dest)
    with pytest.raises(type(exc)):
        with atomic_folder(dest, replace=replace) as staging:
            (staging / "half.txt").write_text("half")
            raise exc
    if replace:
        assert _names(dest) == ["keep.txt"] and (dest / "keep.txt").read_text() == "user data"
        assert _names(tmp_path) == ["out"]
    else:
        assert _names(tmp_path) == []


def test_folder_refuses_a_non_empty_destination_before_any_work(tmp_path):
    dest = _existing(tmp_path / "out")
    ran = False
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        with atomic_folder(dest):
            ran = True
    assert not ran
    assert _names(dest) == ["keep.txt"] and _names(tmp_path) == ["out"]


def test_folder_refuses_a_file_at_the_destination(tmp_path):
    dest = tmp_path / "out"
    dest.write_text("a file")
    with pytest.raises(FileExistsError):
        with atomic_folder(dest):
            pass
    assert dest.read_text() == "a file"


def test_folder_never_overwrites_what_appeared_while_it_was_written(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_folder(dest) as staging:
            (staging / "mine.txt").write_text("staged")
            _existing(dest)  # someone else's folder arrives meanwhile
    assert _names(dest) == ["keep.txt"] and (dest / "keep.txt").read_text() == "user data"
    assert _names(tmp_path) == ["out"]


def test_replace_swaps_the_folder_and_removes_the_old_one(tmp_path):
    dest = _existing(tmp_path / "out")
    with atomic_folder(dest, replace=True) as staging:
        assert (dest / "keep.txt").is_file()  # the old folder stays readable while the new one is written
        (staging / "new.txt").write_text("new")
    assert _names(dest) == ["new.txt"]
    assert _names(tmp_path) == ["out"]


def test_replace_swaps_a_file_for_the_folder(tmp_path):
    dest = tmp_path / "out"
    dest.write_text("a file")
    with atomic_folder(dest, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert _names(dest) == ["new.txt"] and _names(tmp_path) == ["out"]


def test_replace_restores_the_old_folder_when_the_final_rename_fails(tmp_path, monkeypatch):
    dest = _existing(tmp_path / "out")
    real_rename = Path.rename

    def failing_rename(self, target):
        if self.name.endswith(".staging"):  # the last step: staging -> destination
            raise OSError("simulated failure of the final rename")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="simulated"):
        with atomic_folder(dest, replace=True) as staging:
            (staging / "new.txt").write_text("new")
    monkeypatch.undo()
    assert _names(dest) == ["keep.txt"] and (dest / "keep.txt").read_text() == "user data"
    assert _names(tmp_path) == ["out"]  # neither the staging nor the moved-aside folder is left
