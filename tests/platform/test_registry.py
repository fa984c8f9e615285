"""The voice registry: register, look up, list, overwrite, delete; local and non-local storage."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from voicefleet.platform.registry import RegistryError, VoiceNotFound, VoiceRegistry


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
