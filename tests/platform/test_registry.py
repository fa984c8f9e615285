"""The voice registry: register, look up, list, overwrite, delete; local and non-local storage."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from voicefleet.platform.registry import RegistryError, StorageFull, VoiceDamaged, VoiceNotFound, VoiceRegistry


@pytest.fixture
def voice_files(tmp_path):
    files = {}
    for kind, data in (("gpt", b"gpt-weights"), ("sovits", b"sovits-weights"), ("reference", b"RIFF-audio")):
        path = tmp_path / "src" / f"{kind}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        files[kind] = path
    return files


def _register(reg, voice_id, files, **kw):
    return reg.register(voice_id, gpt=files["gpt"], sovits=files["sovits"], reference=files["reference"],
                        prompt_text="你好。", prompt_lang="zh", **kw)


def test_register_get_list_delete(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "store")
    assert reg.list() == []
    rec = _register(reg, "alice", voice_files, metrics={"val_recon": 0.5}, lineage={"run": "r1"})
    assert rec.version == 1 and rec.created_at
    got = reg.get("alice")
    assert got.prompt_text == "你好。" and got.metrics == {"val_recon": 0.5} and got.lineage == {"run": "r1"}
    paths = reg.local_files("alice")
    assert paths["gpt"].read_bytes() == b"gpt-weights" and paths["reference"].read_bytes() == b"RIFF-audio"
    _register(reg, "bob", voice_files)
    assert [r.voice_id for r in reg.list()] == ["alice", "bob"]
    reg.delete("alice")
    assert [r.voice_id for r in reg.list()] == ["bob"]
    with pytest.raises(VoiceNotFound, match="alice"):
        reg.get("alice")
    assert voice_files["gpt"].read_bytes() == b"gpt-weights"  # sources are only read


def test_existing_voice_needs_overwrite_and_gets_a_new_version(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "store")
    _register(reg, "alice", voice_files)
    with pytest.raises(RegistryError, match="already exists"):
        _register(reg, "alice", voice_files)
    assert _register(reg, "alice", voice_files, overwrite=True).version == 2


@pytest.mark.parametrize("bad", ["", "Alice", "../etc", "a/b", "-x", "x" * 65, "a b"])
def test_invalid_voice_ids_are_refused(tmp_path, voice_files, bad):
    reg = VoiceRegistry(tmp_path / "store")
    with pytest.raises(RegistryError, match="invalid voice id"):
        _register(reg, bad, voice_files)
    with pytest.raises(RegistryError, match="invalid voice id"):
        reg.get(bad)


def test_missing_source_file_registers_nothing(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "store")
    files = dict(voice_files, sovits=tmp_path / "nope.pth")
    with pytest.raises(RegistryError, match="nope.pth"):
        _register(reg, "carol", files)
    assert not reg.exists("carol")


def test_half_written_voice_is_invisible(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "store")
    _register(reg, "dave", voice_files)
    (tmp_path / "store" / "voices" / "dave" / "voice.json").unlink()  # as if the writer died before the record
    assert reg.list() == [] and not reg.exists("dave")


def test_non_local_filesystem_copies_to_a_cache(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "unused")
    reg.fs, reg.root, reg.uri = pafs._MockFileSystem(), "bucket/voicefleet", "mock://bucket/voicefleet"
    _register(reg, "erin", voice_files)
    assert [r.voice_id for r in reg.list()] == ["erin"]
    paths = reg.local_files("erin", tmp_path / "cache")
    assert paths["sovits"].read_bytes() == b"sovits-weights"
    assert str(paths["sovits"]).startswith(str(tmp_path / "cache"))
    assert reg.local_files("erin", tmp_path / "cache") == paths  # cached by version


def _mock_registry(tmp_path, voice_files, voice_id="erin"):
    reg = VoiceRegistry(tmp_path / "unused")
    reg.fs, reg.root, reg.uri = pafs._MockFileSystem(), "bucket/voicefleet", "mock://bucket/voicefleet"
    _register(reg, voice_id, voice_files)
    return reg


def test_failed_cache_copy_leaves_nothing_behind(tmp_path, voice_files, monkeypatch):
    reg = _mock_registry(tmp_path, voice_files)
    real_copy = pafs.copy_files

    def copy_then_fail(source, destination, **kw):
        if destination.endswith("sovits.pth"):
            raise OSError("connection reset")
        return real_copy(source, destination, **kw)

    monkeypatch.setattr(pafs, "copy_files", copy_then_fail)
    with pytest.raises(OSError, match="connection reset"):
        reg.local_files("erin", tmp_path / "cache")
    assert list((tmp_path / "cache" / "erin").iterdir()) == []  # no half copy, no staging folder
    monkeypatch.undo()
    assert reg.local_files("erin", tmp_path / "cache")["sovits"].read_bytes() == b"sovits-weights"


def test_cache_copy_made_meanwhile_by_another_process_is_used(tmp_path, voice_files, monkeypatch):
    reg = _mock_registry(tmp_path, voice_files)
    target = tmp_path / "cache" / "erin" / "1"
    real_copy = pafs.copy_files

    def copy_while_another_finishes(source, destination, **kw):
        if not target.exists():  # the other process renames its complete copy into place first
            target.mkdir(parents=True)
            for name in ("gpt.ckpt", "sovits.pth", "reference.wav", "voice.json"):
                (target / name).write_bytes(b"theirs")
        return real_copy(source, destination, **kw)

    monkeypatch.setattr(pafs, "copy_files", copy_while_another_finishes)
    paths = reg.local_files("erin", tmp_path / "cache")
    assert paths["sovits"] == target / "sovits.pth" and paths["sovits"].read_bytes() == b"theirs"
    assert sorted(p.name for p in target.parent.iterdir()) == ["1"]


def test_cache_never_replaces_a_foreign_folder(tmp_path, voice_files):
    reg = _mock_registry(tmp_path, voice_files)
    target = tmp_path / "cache" / "erin" / "1"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        reg.local_files("erin", tmp_path / "cache")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


# --- faults: a full disk, a killed writer, damaged files ----------------------------------------------

def _copy_then_fill_the_disk(real_copy, failing_kind: str):
    """A `pafs.copy_files` that writes half of the `failing_kind` file, then fails as a full disk does."""

    def copy(source, destination, **kw):
        if destination.rsplit("/", 1)[1].startswith(failing_kind):
            data = open(source, "rb").read()
            with open(destination, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, destination, **kw)

    return copy


def _files(reg, voice_id):
    return sorted(p.name for p in (Path(reg.root) / "voices" / voice_id).iterdir())


def test_a_full_disk_registers_nothing_and_leaves_no_half_written_voice(tmp_path, voice_files, monkeypatch):
    reg = VoiceRegistry(tmp_path / "store")
    monkeypatch.setattr(pafs, "copy_files", _copy_then_fill_the_disk(pafs.copy_files, "sovits"))
    with pytest.raises(StorageFull, match="no space left") as raised:
        _register(reg, "frank", voice_files)
    assert "frank" in raised.value.client_message and str(tmp_path) not in raised.value.client_message
    assert not reg.exists("frank") and reg.list() == []
    assert not (Path(reg.root) / "voices" / "frank").exists()  # no partial files either
    monkeypatch.undo()
    assert _register(reg, "frank", voice_files).version == 1  # nothing stale is in the way


def test_a_full_disk_during_an_overwrite_keeps_the_current_version_whole(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "store")
    _register(reg, "grace", voice_files, metrics={"val_recon": 0.5})
    before = _files(reg, "grace")
    newer = dict(voice_files, gpt=tmp_path / "newer.bin")
    newer["gpt"].write_bytes(b"newer-gpt-weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pafs, "copy_files", _copy_then_fill_the_disk(pafs.copy_files, "reference"))
        with pytest.raises(StorageFull):
            _register(reg, "grace", newer, overwrite=True)
    record = reg.get("grace")
    assert record.version == 1 and record.metrics == {"val_recon": 0.5}
    assert reg.local_files("grace")["gpt"].read_bytes() == b"gpt-weights"  # the old weights, whole
    assert _files(reg, "grace") == before  # the new version's partial files are gone
    assert _register(reg, "grace", newer, overwrite=True).version == 2
    assert reg.local_files("grace")["gpt"].read_bytes() == b"newer-gpt-weights"
    assert _files(reg, "grace") == sorted(["gpt.v2.ckpt", "sovits.v2.pth", "reference.v2.wav", "voice.json"])


def test_files_of_a_killed_overwrite_are_ignored_then_removed(tmp_path, voice_files):
    reg = VoiceRegistry(tmp_path / "store")
    _register(reg, "heidi", voice_files)
    folder = Path(reg.root) / "voices" / "heidi"
    (folder / "gpt.v2.ckpt").write_bytes(b"half")  # a writer killed before the record
    (folder / ".voice.json.tmp").write_bytes(b'{"voice_id": "he')
    assert reg.get("heidi").version == 1 and reg.local_files("heidi")["gpt"].read_bytes() == b"gpt-weights"
    assert _register(reg, "heidi", voice_files, overwrite=True).version == 2
    assert reg.local_files("heidi")["gpt"].read_bytes() == b"gpt-weights"
    assert _files(reg, "heidi") == sorted(["gpt.v2.ckpt", "sovits.v2.pth", "reference.v2.wav", "voice.json"])


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"voice_id": "ivan"}', b"\xff\xfe\x00"])
def test_a_damaged_record_fails_for_its_voice_only(tmp_path, voice_files, damage):
    reg = VoiceRegistry(tmp_path / "store")
    _register(reg, "ivan", voice_files)
    _register(reg, "judy", voice_files)
    (Path(reg.root) / "voices" / "ivan" / "voice.json").write_bytes(damage)
    with pytest.raises(VoiceDamaged, match="ivan") as raised:
        reg.get("ivan")
    assert raised.value.client_message == ("voice 'ivan' is damaged on the server and cannot be used; delete it and "
                                           "register it again")
    assert [r.voice_id for r in reg.list()] == ["judy"]  # the others are still listed
    reg.delete("ivan")  # and the damaged one can be removed
    assert not (Path(reg.root) / "voices" / "ivan").exists()
